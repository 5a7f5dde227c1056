"""SimpleSAMLphp (Debian's package) as a real SAML 2.0 IdP for the tests, under `php -S` on a
free loopback port: users alice (groups ml-eng) and bob (product), signed responses and
assertions (rsa-sha256), NameID = mail. Two SPs are registered: llmgate's entity and another
one (for audience tests), both posting to llmgate's ACS."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

SSP_WWW = Path("/usr/share/simplesamlphp/www")


def available() -> bool:
    return SSP_WWW.exists() and shutil.which("php") is not None


def start(workdir: Path, port: int, sp_entity: str, acs: str, other_entity: str) -> subprocess.Popen:
    d = workdir
    for sub in ("config", "metadata", "cert", "log", "data", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "cert/idp.key",
         "-out", d / "cert/idp.crt", "-days", "2", "-subj", "/CN=llmgate-test-idp"],
        check=True, capture_output=True,
    )
    (d / "config/config.php").write_text(f"""<?php
require '/etc/simplesamlphp/config.php';
$config['baseurlpath'] = 'http://127.0.0.1:{port}/';
$config['certdir'] = '{d}/cert/';
$config['loggingdir'] = '{d}/log/';
$config['datadir'] = '{d}/data/';
$config['tempdir'] = '{d}/tmp';
$config['metadatadir'] = '{d}/metadata/';
$config['secretsalt'] = 'llmgate-test-salt-0123456789';
$config['auth.adminpassword'] = 'admin-test';
$config['technicalcontact_email'] = 'test@example.test';
$config['enable.saml20-idp'] = true;
$config['logging.handler'] = 'file';
$config['logging.level'] = SimpleSAML\\Logger::WARNING;
$config['session.cookie.secure'] = false;
$config['session.cookie.samesite'] = null;
$config['store.type'] = 'phpsession';
$config['module.enable'] = ['exampleauth' => true, 'core' => true, 'saml' => true, 'admin' => true];
""")
    (d / "config/authsources.php").write_text("""<?php
$config = [
  'admin' => ['core:AdminPassword'],
  'test-users' => ['exampleauth:UserPass',
     'alice:alicepass' => ['uid' => ['alice'], 'mail' => ['alice@example.test'], 'groups' => ['ml-eng']],
     'bob:bobpass' => ['uid' => ['bob'], 'mail' => ['bob@example.test'], 'groups' => ['product']],
  ],
];
""")
    (d / "metadata/saml20-idp-hosted.php").write_text("""<?php
$metadata['__DYNAMIC:1__'] = [
  'host' => '__DEFAULT__',
  'privatekey' => 'idp.key',
  'certificate' => 'idp.crt',
  'auth' => 'test-users',
  'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  'saml20.sign.assertion' => true,
  'saml20.sign.response' => true,
  'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  'authproc' => [ 3 => ['class' => 'saml:AttributeNameID', 'attribute' => 'mail', 'Format' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'] ],
];
""")
    sps = "\n".join(
        f"""$metadata['{e}'] = [
  'AssertionConsumerService' => '{acs}',
  'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  'simplesaml.nameidattribute' => 'mail',
];"""
        for e in (sp_entity, other_entity)
    )
    (d / "metadata/saml20-sp-remote.php").write_text("<?php\n" + sps + "\n")
    for f in ("saml20-idp-remote.php", "shib13-sp-remote.php"):
        (d / "metadata" / f).touch()
    log = open(d / "log/php.log", "wb")
    proc = subprocess.Popen(
        ["php", "-S", f"127.0.0.1:{port}", "-t", str(SSP_WWW)],
        env={"SIMPLESAMLPHP_CONFIG_DIR": str(d / "config"), "PATH": "/usr/bin:/bin"},
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/saml2/idp/metadata.php", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError((d / "log/php.log").read_text())


def metadata(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/saml2/idp/metadata.php", timeout=5) as r:
        return r.read().decode()
