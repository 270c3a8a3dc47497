"""
A small real telnet client for the end-to-end tests: it speaks the protocol as a plain
client does (the server may echo and suppress go-ahead; everything else is refused, and
every change the server makes is acknowledged) and reads until a pattern, within a
deadline.
"""

from __future__ import annotations

import re
import socket
import time

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SGA = 1, 3
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>78DEHM]")


class TelnetSession:
    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.text = b""  # everything received, options stripped
        self._pending = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TelnetSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_line(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        if not data:
            return False
        data = self._pending + data
        self._pending = b""
        out = bytearray()
        i = 0
        while i < len(data):
            byte = data[i]
            if byte != IAC:
                out.append(byte)
                i += 1
                continue
            if i + 1 >= len(data):
                self._pending = data[i:]
                break
            command = data[i + 1]
            if command == IAC:
                out.append(IAC)
                i += 2
            elif command in (DO, DONT, WILL, WONT):
                if i + 2 >= len(data):
                    self._pending = data[i:]
                    break
                option = data[i + 2]
                if command == WILL:
                    reply = DO if option in (ECHO, SGA) else DONT
                else:
                    reply = {DO: WONT, DONT: WONT, WONT: DONT}[command]
                self.sock.sendall(bytes([IAC, reply, option]))
                i += 3
            elif command == SB:
                end = data.find(bytes([IAC, SE]), i)
                if end < 0:
                    self._pending = data[i:]
                    break
                i = end + 2
            else:
                i += 2
        self.text += bytes(out)
        return True

    def read_until(self, pattern: str | bytes, timeout: float = 10.0, since: int = 0) -> str:
        """Wait for C{pattern} (a regex) in what arrived after offset C{since}; the plain text."""
        if isinstance(pattern, str):
            pattern = pattern.encode("utf-8")
        deadline = time.monotonic() + timeout
        while True:
            plain = ANSI.sub(b"", self.text[since:])
            if re.search(pattern, plain):
                return plain.decode("utf-8", "replace")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{pattern!r} not seen within {timeout}s; got: {plain[-2000:]!r}"
                )
            if not self._receive(min(left, 0.5)):
                raise AssertionError(f"connection closed before {pattern!r}; got: {plain[-2000:]!r}")

    def run(self, line: str, until: str, timeout: float = 10.0) -> str:
        """Type a line at the prompt and read until C{until} shows in the answer."""
        mark = len(self.text)
        self.send_line(line)
        return self.read_until(until, timeout, since=mark)


class TerminalTelnet:
    """
    Debian's C{telnet} program in a pseudo-terminal, typed into as a person would: what a
    real client negotiates and sends (Ctrl-D as IAC EOF in line mode, for instance).
    """

    def __init__(self, host: str, port: int, program: str = "telnet") -> None:
        import os
        import pty
        import subprocess

        self._os = os
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [program, host, str(port)], stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            start_new_session=True,
        )
        os.close(slave)
        self.text = b""

    def type(self, keys: str | bytes) -> None:
        self._os.write(self.master, keys.encode("utf-8") if isinstance(keys, str) else keys)

    def read_until(self, pattern: str, timeout: float = 10.0, since: int = 0) -> str:
        import select

        deadline = time.monotonic() + timeout
        while True:
            plain = ANSI.sub(b"", self.text[since:]).replace(b"\r", b"")
            if re.search(pattern.encode("utf-8"), plain):
                return plain.decode("utf-8", "replace")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen within {timeout}s; got: {plain[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    data = self._os.read(self.master, 65536)
                except OSError:  # the program ended and closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"telnet ended before {pattern!r}; got: {plain[-2000:]!r}")
                self.text += data

    def wait(self, timeout: float = 10.0) -> int:
        """The program's exit status once the connection is over."""
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._os.close(self.master)

    def __enter__(self) -> TerminalTelnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
