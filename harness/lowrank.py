"""The LRT accumulator driver (harness/c/lowrank_driver.c): build and script it, parse its
state dumps, and generate realistic int8 gradient / activation streams.

Imported by tests/c/test_lowrank*.py and bench/lrt_estimator_quality.py.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.cbuild import DRIVERS, LIB_DIR, compile_c
from lrt.lowrank import LowRankAccumulator, LowRankConfig

LIB_SOURCES = [LIB_DIR / "lrt_lowrank.c", LIB_DIR / "lrt_fixmath.c", LIB_DIR / "lrt_common.c"]


def build_driver(out_dir: Path, sanitize: bool = True) -> Path:
    return compile_c([DRIVERS / "lowrank_driver.c", *LIB_SOURCES], out_dir / "lowrank_driver",
                     sanitize=sanitize)  # fmt: skip


def build_shared(out_dir: Path) -> Path:
    """Unsanitised shared library for ctypes (fast property tests)."""
    return compile_c(LIB_SOURCES, out_dir / "liblrt_lowrank.so", extra=["-shared", "-fPIC"],
                     sanitize=False)  # fmt: skip


@dataclass(frozen=True)
class CConfig:
    """lrt_lowrank_config in the C code's fixed-point units."""

    rank: int = 4
    unbiased: bool = True
    maxnorm: bool = True
    batch_pow2: int = 1
    max_block: int = 16
    rho_min_q16: int = 655
    lr_q24: int = 167772
    discount_q16: int = 65536
    b_cap: int = 0
    maxnorm_beta_q30: int = 0  # 0: the library's 0.999
    seed: int = 1

    def reference(self) -> LowRankConfig:
        """The same configuration for the float reference."""
        return LowRankConfig(
            rank=self.rank,
            unbiased=self.unbiased,
            rho_min=self.rho_min_q16 / 65536,
            lr=self.lr_q24 / 2**24,
            batch_pow=self.batch_pow2 / 2,
            maxnorm=self.maxnorm,
            discount=self.discount_q16 / 65536,
            b_cap=float(self.b_cap),
            # as the C: 0 or a value outside (0, 1) in Q30 is the library's 0.999
            maxnorm_beta=(
                self.maxnorm_beta_q30 / 2**30 if 0 < self.maxnorm_beta_q30 < 2**30 else 0.999
            ),
            seed=self.seed,
        )


@dataclass
class Script:
    """Commands for the driver; mirror every call on a float reference if one is given."""

    parts: list[str] = field(default_factory=list)

    def init(self, n: int, m: int, cfg: CConfig) -> Script:
        mode = 0 if cfg.unbiased else 1
        self.parts.append(
            f"I {n} {m} {cfg.rank} {mode} {int(cfg.maxnorm)} {cfg.batch_pow2} {cfg.max_block} "
            f"{cfg.rho_min_q16} {cfg.lr_q24} {cfg.discount_q16} {cfg.b_cap} "
            f"{cfg.maxnorm_beta_q30} {cfg.seed}"
        )
        return self

    def step(self, u: np.ndarray, u_exp: int, v: np.ndarray, v_off: int, v_exp: int) -> Script:
        vals = " ".join(map(str, np.concatenate([u, v]).astype(int).tolist()))
        self.parts.append(f"S {u_exp} {v_off} {v_exp} {vals}")
        return self

    def block(self, left: np.ndarray, l_exp: int, right: np.ndarray, r_exp: int) -> Script:
        """Block step: left (n x k) and right (m x k) int32, sent column-major."""
        k = left.shape[1]
        vals = np.concatenate([left.T.ravel(), right.T.ravel()]).astype(np.int64)
        self.parts.append(f"B {k} {l_exp} {r_exp} " + " ".join(map(str, vals.tolist())))
        return self

    def sum_add(self, g: np.ndarray, exp: int) -> Script:
        """lrt_lowrank_sum_add of the n x m gradient g * 2^exp (the block's right factor,
        column-major m x n: g row by row)."""
        vals = " ".join(map(str, g.astype(np.int64).ravel().tolist()))
        self.parts.append(f"A {exp} {vals}")
        return self

    def cmd(self, text: str) -> Script:
        self.parts.append(text)
        return self

    def text(self) -> str:
        return "\n".join([*self.parts, "Q", ""])


def run(driver: Path, script: Script | str, timeout: float = 300) -> list[str]:
    text = script if isinstance(script, str) else script.text()
    proc = subprocess.run([str(driver)], input=text, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, (
        f"driver failed ({proc.returncode}): {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    assert "error" not in proc.stdout and "step -" not in proc.stdout, proc.stdout[-2000:]
    return proc.stdout.splitlines()


@dataclass
class CState:
    """One 'D' dump of the C accumulator."""

    ql_exp: int
    qr_exp: int
    cx_exp: int
    b_eff_q16: int
    steps: int
    applied: int
    rng: int
    cx: np.ndarray
    ql: np.ndarray  # n x r int16
    qr: np.ndarray

    @property
    def rank(self) -> int:
        return len(self.cx)

    def ql_real(self) -> np.ndarray:
        return self.ql * 2.0**self.ql_exp

    def qr_real(self) -> np.ndarray:
        return self.qr * 2.0**self.qr_exp

    def cx_real(self) -> np.ndarray:
        return self.cx * 2.0**self.cx_exp

    def estimate(self) -> np.ndarray:
        return (self.ql_real() * self.cx_real()) @ self.qr_real().T


def parse_states(lines: list[str], n: int, m: int, rank: int) -> list[CState]:
    out = []
    for i, line in enumerate(lines):
        if not line.startswith("state "):
            continue
        h = [int(x) for x in line.split()[1:]]
        cx = np.array([int(x) for x in lines[i + 1].split()[1:]], dtype=np.float64)
        ql = np.array([int(x) for x in lines[i + 2].split()[1:]], dtype=np.int64)
        qr = np.array([int(x) for x in lines[i + 3].split()[1:]], dtype=np.int64)
        out.append(CState(h[0], h[1], h[2], h[3], h[4], h[5], h[6], cx,
                          ql.reshape(n, rank), qr.reshape(m, rank)))  # fmt: skip
    return out


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- realistic streams --------------------------------------------------------------------


@dataclass
class Term:
    u: np.ndarray  # int8 [n]
    u_exp: int
    v: np.ndarray  # int8 [m]
    v_off: int
    v_exp: int

    def real(self) -> tuple[np.ndarray, np.ndarray]:
        return self.u * 2.0**self.u_exp, (self.v.astype(np.int64) + self.v_off) * 2.0**self.v_exp


def conv_stream(rng: np.random.Generator, samples: int, n: int = 16, in_c: int = 8,
                size: int = 8, k: int = 3, noise: float = 0.3) -> list[list[Term]]:  # fmt: skip
    """Per sample, the (dz_p, patch_p) terms of a 'valid' k x k conv layer.

    Activations: ReLU outputs in the paper's format (int8, zero point -128, LSB 2^-7), about
    half of them zero. Output gradients: those of a layer that is off its target by a fixed
    low-rank error E (dz_p = E patch_p + noise, as for a squared loss), masked by a ReLU
    pattern and stored as int8 block floating point per sample like lrt_backprop (largest
    |dz| = 127). So the sum has a dominant decaying spectrum plus a noise floor.
    """
    out = size - k + 1
    m = k * k * in_c
    err = (rng.normal(size=(n, 3)) * [1.0, 0.5, 0.25]) @ rng.normal(size=(3, m)) / np.sqrt(m)
    stream = []
    for _ in range(samples):
        act = np.maximum(rng.normal(0.0, 0.6, size=(size, size, in_c)), 0.0)
        x = np.clip(np.round(act / 2**-7) - 128, -128, 127).astype(np.int64)
        patches = np.stack([x[y : y + k, xx : xx + k, :].reshape(-1)
                            for y in range(out) for xx in range(out)])  # fmt: skip
        real = (patches + 128) * 2.0**-7
        g = real @ err.T + noise * rng.normal(size=(out * out, n))
        g *= rng.random((out * out, n)) < 0.5
        g_exp = int(np.ceil(np.log2(np.abs(g).max() / 127)))
        dz = np.clip(np.round(g / 2.0**g_exp), -127, 127).astype(np.int64)
        stream.append([Term(dz[p], g_exp, patches[p], 128, -7) for p in range(out * out)])
    return stream


def script_stream(script: Script, stream: list[list[Term]]) -> Script:
    for sample in stream:
        for t in sample:
            script.step(t.u, t.u_exp, t.v, t.v_off, t.v_exp)
        script.cmd("E")
    return script


# ---- blocks as the firmware forms them (lrt_train.c) ------------------------------------


@dataclass
class Block:
    left: np.ndarray  # int64 [n, k]
    l_exp: int
    right: np.ndarray  # int64 [m, k]
    r_exp: int

    def real(self) -> tuple[np.ndarray, np.ndarray]:
        return self.left * 2.0**self.l_exp, self.right * 2.0**self.r_exp


def sample_blocks(sample: list[Term], kb: int = 16) -> list[Block]:
    """One sample's terms as the trainer hands them to the accumulator: one term (dense) is a
    block of one column; a conv layer with n <= kb channels is one block (left = I, right =
    G^T); a wider one goes in blocks of kb pixels."""
    t0 = sample[0]
    n = len(t0.u)
    dz = np.array([t.u for t in sample], dtype=np.int64)
    patches = np.array([t.v.astype(np.int64) + t.v_off for t in sample])
    if len(sample) == 1:
        return [Block(dz.T, t0.u_exp, patches.T, t0.v_exp)]
    if n <= kb:
        return [Block(np.eye(n, dtype=np.int64), 0, patches.T @ dz, t0.u_exp + t0.v_exp)]
    live = np.flatnonzero(dz.any(axis=1))
    return [Block(dz[live[s : s + kb]].T, t0.u_exp, patches[live[s : s + kb]].T, t0.v_exp)
            for s in range(0, len(live), kb)]  # fmt: skip


def dense_stream(rng: np.random.Generator, samples: int, n: int, m: int) -> list[list[Term]]:
    """Per sample the single term dz a^T of a dense layer (ReLU inputs, int8 block-float dz
    off by a fixed low-rank error, as in conv_stream)."""
    err = (rng.normal(size=(n, 3)) * [1.0, 0.5, 0.25]) @ rng.normal(size=(3, m)) / np.sqrt(m)
    out = []
    for _ in range(samples):
        a = np.clip(np.round(np.maximum(rng.normal(0.0, 0.6, size=m), 0.0) / 2**-7) - 128,
                    -128, 127).astype(np.int64)  # fmt: skip
        g = err @ ((a + 128) * 2.0**-7) + 0.3 * rng.normal(size=n)
        g_exp = int(np.ceil(np.log2(np.abs(g).max() / 127)))
        dz = np.clip(np.round(g / 2.0**g_exp), -127, 127).astype(np.int64)
        out.append([Term(dz, g_exp, a, 128, -7)])
    return out


def script_blocks(script: Script, blocks: list[list[Block]]) -> Script:
    for sample in blocks:
        for b in sample:
            script.block(b.left, b.l_exp, b.right, b.r_exp)
        script.cmd("E")
    return script


def feed_blocks(acc: LowRankAccumulator, blocks: list[list[Block]]) -> np.ndarray:
    """Run the float reference over per-sample blocks; returns the exact sum."""
    exact = np.zeros((acc.n, acc.m))
    for sample in blocks:
        for b in sample:
            left, right = b.real()
            exact += left @ right.T
            acc.step_block(left, right)
        acc.end_sample()
    return exact
