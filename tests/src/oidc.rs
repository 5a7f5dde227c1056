//! A real OpenID Provider for the tests: panva's `oidc-provider` (OpenID Certified) run by
//! `tests/oidc/idp.mjs` under Node.js on an ephemeral loopback port, its npm package installed
//! in `tests/oidc/node_modules` (`npm ci --prefix tests/oidc`; `.ci/run` does it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

pub struct Idp {
    child: Option<Child>,
    pub issuer: String,
    pub port: u16,
    keys: tempfile::TempDir,
    users: String,
    log: PathBuf,
}

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

impl Idp {
    /// Starts the provider signing with `kids[0]` and publishing all of `kids`. `users` maps
    /// user ids to their groups (`{"alice": ["ml-eng"]}`).
    pub fn start(kids: &[&str], users: &Value) -> Idp {
        let keys = tempfile::tempdir().expect("tempdir");
        let mut idp = Idp {
            child: None,
            issuer: String::new(),
            port: 0,
            keys,
            users: users.to_string(),
            log: PathBuf::new(),
        };
        idp.launch(kids, 0);
        idp
    }

    fn launch(&mut self, kids: &[&str], port: u16) {
        assert!(
            oidc_dir().join("node_modules/oidc-provider").exists(),
            "the test OpenID Provider is not installed: run `npm ci --prefix tests/oidc`"
        );
        let out = self.keys.path().join(format!("idp-{}.out", kids.join("-")));
        self.log = self.keys.path().join("idp.log");
        let child = Command::new("node")
            .arg(oidc_dir().join("idp.mjs"))
            .env("KEYS_DIR", self.keys.path())
            .env("KIDS", kids.join(","))
            .env("PORT", port.to_string())
            .env("USERS_JSON", &self.users)
            .stdout(std::fs::File::create(&out).expect("idp stdout"))
            .stderr(std::fs::File::create(&self.log).expect("idp log"))
            .spawn()
            .expect("start node (install Node.js)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(issuer) = text.lines().find_map(|l| l.strip_prefix("READY ")) {
                self.issuer = issuer.trim().to_owned();
                self.port = self
                    .issuer
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("issuer port");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the OpenID Provider did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Restarts on the same port with other keys (rotation).
    pub fn restart(&mut self, kids: &[&str]) {
        self.stop();
        let port = self.port;
        self.launch(kids, port);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client-credentials access token, as a service gets one.
    pub fn client_credentials(&self, client: &str) -> String {
        let out = Command::new("curl")
            .args(["-sS", "-u", &format!("{client}:{client}-secret")])
            .args(["-d", "grant_type=client_credentials", "-d", "scope=llmgate"])
            .arg(format!("{}/token", self.issuer))
            .output()
            .expect("curl");
        let v: Value = serde_json::from_slice(&out.stdout).expect("token response");
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {v}"))
            .to_owned()
    }

    pub fn private_pem(&self, kid: &str) -> Vec<u8> {
        std::fs::read(self.keys.path().join(format!("{kid}.pem"))).expect("private key")
    }

    pub fn public_pem(&self, kid: &str) -> Vec<u8> {
        std::fs::read(self.keys.path().join(format!("{kid}.pub.pem"))).expect("public key")
    }

    /// A token signed with the provider's own key `kid`: what it would issue for these claims.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(&self.private_pem(kid)).expect("RSA key");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    pub fn keys_dir(&self) -> &Path {
        self.keys.path()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}
