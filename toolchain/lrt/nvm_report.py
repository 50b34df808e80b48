"""The wear report of an inspected NVM image (``lrt-emulate --nvm-report``): markdown or text."""

from __future__ import annotations

from lrt.nvm import VERSION, NvmReport


def render_markdown(rep: NvmReport) -> str:
    lines = [f"# NVM image `{rep.path}`", ""]
    if rep.layout is None:
        if rep.version_seen:
            lines.append(
                f"Format version {rep.other_version} image: this toolchain and its firmware use "
                f"version {VERSION}. The firmware refuses it and leaves it untouched; "
                "`--format` re-initialises it (its sets are lost).")
        else:
            lines.append("No lrt_nvm header found" + (" (blank device)." if rep.empty else "."))
        return "\n".join(lines) + "\n"
    lay = rep.layout
    if rep.tech == "flash":
        shape = (f"{lay.units} pages of {rep.page_size} bytes each (metadata {lay.meta_size} "
                 f"bytes, then the {rep.blob_size}-byte blob)")
    else:
        shape = (f"metadata {lay.meta_size} bytes, blob {rep.blob_size} bytes in "
                 f"{lay.blob_units} units of {lay.unit_size} bytes")
    lines += [
        f"{rep.tech}, {rep.image_size} bytes, {lay.n_slots} slots of {lay.slot_size} bytes: "
        f"{shape}, prog {rep.prog_size}, page {rep.page_size}.",
        "",
        "| slot | offset | state | generation | units written by its commit |",
        "|---|---|---|---|---|",
    ]
    for s in rep.slots:
        uw = s.header.units_written if s.header and s.header.version == VERSION else ""
        state = f"{s.state} ({s.note})" if s.note else s.state
        lines.append(f"| {s.index} | {s.offset} | {state} | {s.generation or ''} | {uw} |")
    lines.append("")
    if rep.geometry_from == "image":
        lines += ["Geometry and model id read from the image's headers (no build given): the "
                  "device decides with its build's.", ""]
    if rep.chosen is None:
        if rep.foreign:
            lines.append("Boot: refused: the store holds another model's (or format's) sets; "
                         "the firmware leaves it untouched unless started with `--format`.")
        else:
            from lrt.store import refusal

            why = refusal(rep)
            lines.append("Boot: no usable weight set" + (
                " (blank device: the firmware commits its built-in set)." if rep.empty else
                " (only unreadable headers: the firmware commits its built-in set)." if not why
                else f": {why}; the firmware would commit its built-in set over it, "
                "lrt-emulate --nvm refuses it unless `--format`."))
        return "\n".join(lines) + "\n"
    flags = [n for n, on in (("fallback", rep.fallback), ("degraded", rep.degraded),
                             ("foreign slots seen", rep.foreign)) if on]
    lines.append(f"Boot: slot {rep.chosen}, generation {rep.generation}"
                 + (f" ({', '.join(flags)})" if flags else "") + ".")
    if rep.tech == "flash":
        rest = (f"other pages max {rep.max_blob_writes}, mean {rep.mean_blob_writes:.2f}; "
                if lay.blob_units else "")
        wear = (f"Wear (erases per page): {rest}first page (header, table and the start of "
                f"the blob, rewritten by every commit into its slot) max {rep.max_meta_writes}.")
    else:
        wear = (f"Wear (writes per unit): blob max {rep.max_blob_writes}, mean "
                f"{rep.mean_blob_writes:.2f}; metadata (header + table, rewritten by every "
                f"commit into its slot) max {rep.max_meta_writes}.")
    if rep.wear_stale:
        src = ("no slot's table verifies: the firmware counts from zero" if rep.wear_slot is None
               else f"the counts are slot {rep.wear_slot}'s, an older set's table")
        wear += f" The set's own wear table failed its CRC; {src}."
    lines += ["", wear]
    if rep.projected_days is not None:
        years = rep.projected_days / 365.25
        lines.append(
            f"Projected lifetime at endurance {rep.endurance}, {rep.samples} samples at "
            f"{rep.sample_rate:g}/s: {rep.projected_days} days ({years:.1f} years)."
        )
    return "\n".join(lines) + "\n"


def render_text(rep: NvmReport) -> str:
    """Plain text: the markdown without its markup."""
    out = []
    for line in render_markdown(rep).splitlines():
        if line.startswith("|---"):
            continue
        out.append(line.lstrip("# ").replace("`", "").strip(" |").replace(" | ", "  "))
    return "\n".join(out) + "\n"


def is_sound(rep: NvmReport) -> bool:
    """A weight set to boot from, and no slot that failed its checks (the exit status of
    ``lrt-emulate --nvm-report``)."""
    return (
        rep.layout is not None
        and rep.chosen is not None
        and not rep.degraded
        and all(s.state in ("valid", "blank") for s in rep.slots)
    )


def render_report(rep: NvmReport, markdown: bool = False) -> str:
    """The report as text (``lrt-emulate --nvm-report``) or markdown."""
    return render_markdown(rep) if markdown else render_text(rep)
