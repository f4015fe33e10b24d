//! Loading and reloading the server's certificate: what is refused, and that
//! a refused reload leaves the certificate in use alone. (Serving HTTPS end to
//! end is tested with the real binary in `crates/entitle/tests/tls.rs`.)

use std::path::Path;

use entitle_server::{ServerTls, TlsError};

fn self_signed(name: &str) -> (String, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
    (cert.pem(), signing_key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path
}

#[test]
fn a_key_that_does_not_match_is_refused_at_start_and_at_reload() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed("localhost");
    let (_, other_key) = self_signed("localhost");
    let cert_path = write(dir.path(), "cert.pem", &cert);
    let key_path = write(dir.path(), "key.pem", &other_key);
    let refused = ServerTls::load(&cert_path, &key_path).expect_err("mismatch");
    assert!(matches!(refused, TlsError::Rejected { .. }), "{refused}");

    write(dir.path(), "key.pem", &key);
    let tls = ServerTls::load(&cert_path, &key_path).expect("a matching pair loads");
    write(dir.path(), "key.pem", &other_key);
    let refused = tls.reload().expect_err("mismatch on reload");
    assert!(refused.to_string().contains("key.pem"), "{refused}");
    // The pair on disk is whole again: the reload takes it.
    write(dir.path(), "key.pem", &key);
    tls.reload().expect("reloaded");
}

#[test]
fn unreadable_or_empty_files_name_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed("localhost");
    let key_path = write(dir.path(), "key.pem", &key);
    let cert_path = write(dir.path(), "cert.pem", &cert);

    let missing = ServerTls::load(&dir.path().join("absent.pem"), &key_path).expect_err("absent");
    assert!(
        missing.to_string().starts_with("certificate ")
            && missing.to_string().contains("absent.pem"),
        "{missing}"
    );
    let empty = write(dir.path(), "empty.pem", "");
    let no_block = ServerTls::load(&empty, &key_path).expect_err("empty");
    assert!(
        no_block.to_string().contains("no CERTIFICATE block"),
        "{no_block}"
    );
    let no_key = ServerTls::load(&cert_path, &cert_path).expect_err("a certificate is no key");
    assert!(no_key.to_string().starts_with("private key "), "{no_key}");
}
