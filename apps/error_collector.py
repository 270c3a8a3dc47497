"""
An error collector: appends every AppErrorOccurredMessage, as one JSON object a line,
to `path`. File writes block, so give this app `threads = 1` in the config.

Config: path (default "errors.jsonl", relative to the working directory).
"""

import json

from scbus import AppErrorOccurredMessage


def make_error_collector(name, root_config, config):
    path = config.get("path", "errors.jsonl")

    def on_error(report):
        record = report.to_dict()
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    return {AppErrorOccurredMessage: on_error}
