"""lrt: low-rank training toolchain for microcontrollers with weights in NVM."""

__version__ = "0.1.0"
