"""`dutserver`: the original dutserver command line, on taskfleet's database.

dutserver server PORT DBFILE
dutserver addaccount DBFILE NAME agent|admin   (password: one line from stdin)
dutserver remove DBFILE NAME                    (`delaccount` is accepted too)
"""

from __future__ import annotations

import asyncio
import sys

from taskfleet.core import errors
from taskfleet.core.accounts import AccountService
from taskfleet.core.models import Role
from taskfleet.core.ports import SystemClock
from taskfleet.store.sql import open_store

USAGE = """\
{prog} server PORT DBFILE
\tLaunch server on PORT using DBFILE.
{prog} addaccount DBFILE NAME TYPE
\tAdd client NAME as TYPE to DBFILE. Password will be read from stdin. \
Type can be either 'agent' or 'admin'.
{prog} remove DBFILE NAME
\tRemove client NAME from DBFILE.
"""


async def _add(db: str, name: str, role: Role, secret: str) -> None:
    store = await open_store(db)
    try:
        await AccountService(store, SystemClock()).add(name, role, secret)
    finally:
        await store.close()


async def _remove(db: str, name: str) -> None:
    store = await open_store(db)
    try:
        await AccountService(store, SystemClock()).remove(name)
    finally:
        await store.close()


def _server(args: list[str]) -> int:
    if len(args) != 2 or not args[0].isdigit():
        print("Usage: dutserver server PORT DBFILE", file=sys.stderr)
        return 1
    from taskfleet import cli

    return int(cli.main(["server", *args], standalone_mode=False) or 0)


def _addaccount(args: list[str]) -> int:
    if len(args) != 3 or args[2] not in ("agent", "admin"):
        print("Usage: dutserver addaccount DBFILE NAME agent|admin", file=sys.stderr)
        return 1
    db, name, role = args
    print("Enter password for account: ", end="", flush=True)
    secret = sys.stdin.readline().rstrip("\r\n")
    asyncio.run(_add(db, name, Role(role), secret))
    print("OK.", file=sys.stderr)
    return 0


def _remove_cmd(args: list[str]) -> int:
    if len(args) != 2:
        print("Usage: dutserver remove DBFILE NAME", file=sys.stderr)
        return 1
    asyncio.run(_remove(*args))
    print("OK.", file=sys.stderr)
    return 0


COMMANDS = {
    "server": _server,
    "addaccount": _addaccount,
    "remove": _remove_cmd,
    "delaccount": _remove_cmd,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(USAGE.format(prog="dutserver"), file=sys.stderr, end="")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print("Unknown subcommand.", file=sys.stderr)
        return 1
    try:
        return command(args[1:])
    except (errors.Error, ValueError, OSError) as exc:
        print(getattr(exc, "message", str(exc)), file=sys.stderr)
        return 1


def run() -> None:
    sys.exit(main())
