#!/usr/bin/env python3
"""Readiness probe for the test-bench MongoDB imitation (SecantusDB).

Run with the stack venv's python (pymongo comes with SecantusDB).
usage: mongo_probe.py HOST PORT      exit 0 = a writable primary answered hello
Prints "<secantusVersion> (reports mongod <version>, replica set <setName>)".
"""
import sys

import pymongo


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        client = pymongo.MongoClient(
            host, port, directConnection=True,
            serverSelectionTimeoutMS=1500, connectTimeoutMS=1500, socketTimeoutMS=3000,
        )
        hello = client.admin.command("hello")
        info = client.admin.command("buildInfo")
    except pymongo.errors.PyMongoError as exc:
        print("not ready: %s" % exc.__class__.__name__)
        sys.exit(1)
    if not hello.get("isWritablePrimary"):
        print("not ready: not a writable primary")
        sys.exit(1)
    print("%s (reports mongod %s, replica set %s)" % (
        info.get("secantusVersion", "?"), info.get("version", "?"), hello.get("setName", "-")))
    sys.exit(0)


if __name__ == "__main__":
    main()
