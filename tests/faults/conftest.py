"""The fault suite's summary table, printed after the run."""

from __future__ import annotations

COLUMNS = ("case", "sent", "confirmed", "handled", "lost", "duplicated")


def table(rows: list[dict]) -> str:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    header = [*COLUMNS, "notes"]
    lines = [header]
    for r in rows:
        notes = ", ".join(f"{k}={r[k]}" for k in extra if k in r)
        lines.append([str(r.get(c, "")) for c in COLUMNS] + [notes])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from .test_faults import RESULTS

    if RESULTS:
        terminalreporter.section("fault suite: messages through each fault")
        terminalreporter.write_line(table(RESULTS))
