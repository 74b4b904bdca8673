#!/usr/bin/env python3
"""Readiness probe for the test-bench MongoDB imitation (SecantusDB).

Run with the stack venv's python (pymongo comes with SecantusDB).
usage: mongo_probe.py HOST PORT      exit 0 = a writable primary answered hello
       mongo_probe.py HOST PORT --create-user NAME
                                     create NAME (role root on admin) with the
                                     password of STACK_MONGO_PASSWORD_FILE
Prints "<secantusVersion> (reports mongod <version>, replica set <setName>)".

MONGO_SECURITY=scram_tls: STACK_MONGO_TLS_CA (CA file: connect with TLS),
STACK_MONGO_USER and STACK_MONGO_PASSWORD_FILE (SCRAM-SHA-256 login).
"""
import os
import sys

import pymongo


def _client(host, port, login):
    opts = {}
    if os.environ.get("STACK_MONGO_TLS_CA"):
        opts.update(tls=True, tlsCAFile=os.environ["STACK_MONGO_TLS_CA"])
    if login and os.environ.get("STACK_MONGO_USER"):
        with open(os.environ["STACK_MONGO_PASSWORD_FILE"], encoding="utf-8") as f:
            password = f.read()
        opts.update(username=os.environ["STACK_MONGO_USER"], password=password,
                    authSource="admin", authMechanism="SCRAM-SHA-256")
    return pymongo.MongoClient(
        host, port, directConnection=True,
        serverSelectionTimeoutMS=1500, connectTimeoutMS=1500, socketTimeoutMS=3000, **opts,
    )


def create_user(host, port, name):
    with open(os.environ["STACK_MONGO_PASSWORD_FILE"], encoding="utf-8") as f:
        password = f.read()
    client = _client(host, port, login=False)
    client.admin.command("createUser", name, pwd=password, roles=[{"role": "root", "db": "admin"}])
    print("created user %s" % name)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    if sys.argv[3:4] == ["--create-user"]:
        create_user(host, port, sys.argv[4])
        return
    try:
        client = _client(host, port, login=True)
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
