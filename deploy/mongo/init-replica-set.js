// One-off initialisation of the MongoDB replica set for docker-compose
// (service mongo-init: `mongosh --nodb --quiet /init/init-replica-set.js`).
// Idempotent: every step checks first, so it can run on every `up`.
//
//  1. waits until mongod answers;
//  2. rs.initiate()s the one-member set rs0 unless it is initiated already;
//  3. waits until the member is PRIMARY;
//  4. creates (or updates the password of) the least-privilege user of
//     mongo-source: `read` on the pipeline database (find + changeStream).
//
// Credentials come from docker-compose secrets (files under /run/secrets/,
// made by deploy/make-secrets.sh), never from this file or the environment:
// MONGO_ROOT_USER with the password in MONGO_ROOT_PASSWORD_FILE (the root
// user the mongo image created on the first start), and MONGO_SOURCE_USER
// with the password in MONGO_SOURCE_PASSWORD_FILE.

const fs = require('fs');
const env = process.env;
const host = env.MONGO_HOST || 'mongo:27017';
const setName = env.MONGO_REPLICA_SET || 'rs0';
const database = env.MONGO_DATABASE || 'mountain';
const sourceUser = env.MONGO_SOURCE_USER || 'mongo-source';
const rootUser = env.MONGO_ROOT_USER || 'root';
const waitSeconds = Number(env.MONGO_INIT_WAIT_SECONDS || 120);

// The secret in the file named by the variable `name`, without its newline.
function secretFile(name) {
  const path = env[name];
  if (!path) {
    throw new Error(`${name} is not set (docker-compose.yml)`);
  }
  const value = fs.readFileSync(path, 'utf8').replace(/[\r\n]+$/, '');
  if (value === '') {
    throw new Error(`${name}: ${path} is empty (run deploy/make-secrets.sh)`);
  }
  return value;
}

const rootPassword = secretFile('MONGO_ROOT_PASSWORD_FILE');
const sourcePassword = secretFile('MONGO_SOURCE_PASSWORD_FILE');

// 1. connect (directConnection: the set may not exist yet)
let conn = null;
for (let i = 0; i < waitSeconds && conn === null; i++) {
  try {
    conn = new Mongo(`mongodb://${host}/?directConnection=true&serverSelectionTimeoutMS=2000`);
    conn.getDB('admin').runCommand({ ping: 1 });
  } catch (e) {
    conn = null;
    sleep(1000);
  }
}
if (conn === null) {
  throw new Error(`mongod at ${host} did not answer within ${waitSeconds}s`);
}
const admin = conn.getDB('admin');
admin.auth(rootUser, rootPassword);

// 2. initiate once
const status = admin.runCommand({ replSetGetStatus: 1 });
if (status.ok === 1) {
  print(`mongo-init: replica set ${status.set} already initiated`);
} else if (status.code === 94 /* NotYetInitialized */) {
  const res = admin.runCommand({
    replSetInitiate: { _id: setName, members: [{ _id: 0, host: host }] },
  });
  if (res.ok !== 1) {
    throw new Error(`replSetInitiate failed: ${JSON.stringify(res)}`);
  }
  print(`mongo-init: replica set ${setName} initiated with member ${host}`);
} else {
  throw new Error(`replSetGetStatus failed: ${JSON.stringify(status)}`);
}

// 3. wait for PRIMARY
let primary = false;
for (let i = 0; i < waitSeconds && !primary; i++) {
  primary = admin.runCommand({ hello: 1 }).isWritablePrimary === true;
  if (!primary) sleep(1000);
}
if (!primary) {
  throw new Error(`no PRIMARY within ${waitSeconds}s`);
}
print('mongo-init: member is PRIMARY');

// 4. the user of mongo-source
const roles = [{ role: 'read', db: database }];
if (admin.getUser(sourceUser) === null) {
  admin.createUser({ user: sourceUser, pwd: sourcePassword, roles: roles });
  print(`mongo-init: user ${sourceUser} created (read on ${database})`);
} else {
  admin.updateUser(sourceUser, { pwd: sourcePassword, roles: roles });
  print(`mongo-init: user ${sourceUser} updated (read on ${database})`);
}
