//! Private secured servers of `scripts/stack` for the security tests, each
//! in a fresh temporary `STACK_DIR` on free ports, wiped on drop:
//!
//! - [`SecureKafka`]: `KAFKA_SECURITY=sasl_ssl`, a SASL_SSL listener
//!   (SCRAM-SHA-512 and PLAIN, one user with a random password) beside the
//!   plain listener, TLS from a CA generated into the `STACK_DIR`;
//! - [`SecureOpenSearch`]: `ES_FLAVOR=opensearch ES_SECURITY=basic_tls`,
//!   OpenSearch 2.19.1 with its security plugin (HTTPS, basic auth, user
//!   `admin` with a random password);
//! - [`SecureMongo`]: `MONGO_SECURITY=scram_tls`, SecantusDB with TLS and
//!   `--auth` (SCRAM-SHA-256, one root user with a random password).

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `scripts/stack ARGS` with `env`; panics when it fails.
fn stack(dir: &Path, env: &[(&str, String)], args: &[&str]) {
    let mut c = Command::new(crate::private_stack::stack_script());
    c.args(args).env("STACK_DIR", dir);
    for (k, v) in env {
        c.env(k, v);
    }
    let st = c.status().expect("run scripts/stack");
    assert!(
        st.success(),
        "scripts/stack {args:?} failed (STACK_DIR {})",
        dir.display()
    );
}

/// `n` distinct free ports.
fn ports<const N: usize>() -> [u16; N] {
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        let p = crate::free_port();
        if !out[..i].contains(&p) {
            out[i] = p;
            i += 1;
        }
    }
    out
}

/// A random password of letters and digits (what scripts/stack accepts).
fn random_password(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A private Kafka broker with a SASL_SSL listener.
pub struct SecureKafka {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    /// Port of the plain listener (test set-up and checks only).
    pub plain_port: u16,
    /// Port of the SASL_SSL listener.
    pub sasl_port: u16,
    /// The SASL user (SCRAM-SHA-512 and PLAIN).
    pub username: String,
    /// Its password.
    pub password: String,
}

impl SecureKafka {
    /// Starts the broker (blocks until it answers, about 10 s).
    pub fn start() -> Self {
        let [plain, controller, sasl] = ports::<3>();
        let password = random_password("KafkaPw");
        let env = vec![
            ("KAFKA_SECURITY", "sasl_ssl".to_string()),
            ("KAFKA_PORT", plain.to_string()),
            ("KAFKA_CONTROLLER_PORT", controller.to_string()),
            ("KAFKA_SASL_SSL_PORT", sasl.to_string()),
            ("KAFKA_SASL_USERNAME", "pipeline".to_string()),
            ("KAFKA_SASL_PASSWORD", password.clone()),
        ];
        let k = Self {
            dir: std::env::temp_dir().join(crate::unique("stack-kafka-sec-")),
            env,
            plain_port: plain,
            sasl_port: sasl,
            username: "pipeline".into(),
            password,
        };
        stack(&k.dir, &k.env, &["start", "kafka"]);
        k
    }

    /// `bootstrap.servers` of the SASL_SSL listener.
    pub fn sasl_ssl(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }

    /// `bootstrap.servers` of the plain listener.
    pub fn plaintext(&self) -> String {
        format!("127.0.0.1:{}", self.plain_port)
    }

    /// The CA certificate (PEM) that signed the broker's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// The file holding the SASL password (written by scripts/stack).
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("secrets/kafka-sasl.password")
    }
}

impl Drop for SecureKafka {
    fn drop(&mut self) {
        crate::private_stack::stack_down(&self.dir, &self.env);
    }
}

/// A private OpenSearch node with the security plugin: HTTPS only, basic
/// auth against its internal user `admin`.
pub struct SecureOpenSearch {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    http_port: u16,
    /// The `admin` password.
    pub password: String,
    client: elasticsearch::Elasticsearch,
}

impl SecureOpenSearch {
    /// Starts the node (blocks until it answers, 25-40 s).
    pub fn start() -> Self {
        let [http, transport] = ports::<2>();
        let password = random_password("EsPw");
        let env = vec![
            ("ES_FLAVOR", "opensearch".to_string()),
            ("ES_SECURITY", "basic_tls".to_string()),
            ("ES_PORT", http.to_string()),
            ("ES_TRANSPORT_PORT", transport.to_string()),
            ("ES_ADMIN_PASSWORD", password.clone()),
        ];
        let dir = std::env::temp_dir().join(crate::unique("stack-os-sec-"));
        stack(&dir, &env, &["start", "elasticsearch"]);
        let pem = std::fs::read(dir.join("tls/ca.pem")).expect("ca.pem");
        let pool = SingleNodeConnectionPool::new(
            format!("https://127.0.0.1:{http}").parse().expect("url"),
        );
        let transport = TransportBuilder::new(pool)
            .auth(Credentials::Basic("admin".into(), password.clone()))
            .cert_validation(CertificateValidation::Full(
                Certificate::from_pem(&pem).expect("pem"),
            ))
            .enable_meta_header(false)
            .build()
            .expect("transport");
        Self {
            dir,
            env,
            http_port: http,
            password,
            client: elasticsearch::Elasticsearch::new(transport),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.http_port)
    }

    /// The CA certificate (PEM) that signed the node's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// The file holding the `admin` password (written by scripts/stack).
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("secrets/es-admin.password")
    }

    /// One request as `admin`: status and JSON body (`Null` if not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        crate::private_stack::es_call(&self.client, method, path, body).await
    }
}

impl Drop for SecureOpenSearch {
    fn drop(&mut self) {
        crate::private_stack::stack_down(&self.dir, &self.env);
    }
}

/// A private SecantusDB with TLS and SCRAM-SHA-256 authentication.
pub struct SecureMongo {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    /// Its port.
    pub port: u16,
    /// The user (role root on admin).
    pub username: String,
    /// Its password.
    pub password: String,
}

impl SecureMongo {
    /// Starts the server (blocks until it answers, about 6 s: it starts
    /// once without `--auth` to create the user).
    pub fn start() -> Self {
        let [port] = ports::<1>();
        let password = random_password("MongoPw");
        let env = vec![
            ("MONGO_SECURITY", "scram_tls".to_string()),
            ("MONGO_PORT", port.to_string()),
            ("MONGO_USERNAME", "pipeline".to_string()),
            ("MONGO_PASSWORD", password.clone()),
        ];
        let m = Self {
            dir: std::env::temp_dir().join(crate::unique("stack-mongo-sec-")),
            env,
            port,
            username: "pipeline".into(),
            password,
        };
        stack(&m.dir, &m.env, &["start", "mongodb"]);
        m
    }

    /// A connection string without credentials or TLS options (those come
    /// from the binary's `mongodb.*` keys).
    pub fn plain_uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&authSource=admin",
            self.port
        )
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// The file holding the password (written by scripts/stack).
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("secrets/mongo.password")
    }

    /// A client logged in over TLS.
    pub async fn client(&self) -> mongodb::Client {
        let mut opts = mongodb::options::ClientOptions::parse(self.plain_uri())
            .await
            .expect("uri");
        opts.credential = Some(
            mongodb::options::Credential::builder()
                .username(self.username.clone())
                .password(self.password.clone())
                .source("admin".to_string())
                .build(),
        );
        opts.tls = Some(mongodb::options::Tls::Enabled(
            mongodb::options::TlsOptions::builder()
                .ca_file_path(self.ca_file())
                .build(),
        ));
        mongodb::Client::with_options(opts).expect("client")
    }
}

impl Drop for SecureMongo {
    fn drop(&mut self) {
        crate::private_stack::stack_down(&self.dir, &self.env);
    }
}

/// A CA certificate that signed nothing of the bench (for wrong-CA tests),
/// made with openssl in `dir`.
pub fn unrelated_ca(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let (key, pem) = (dir.join("other-ca.key"), dir.join("other-ca.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&pem)
        .args(["-subj", "/CN=unrelated test CA"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl req failed");
    pem
}

/// Waits for `proc` to exit by itself (at most `timeout`); its exit status.
pub fn wait_exit(proc: &mut crate::process::Proc, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = proc.child.try_wait().expect("try_wait") {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {timeout:?}; log:\n{}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
