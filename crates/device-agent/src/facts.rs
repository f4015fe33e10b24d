//! What the device is, read from the device: host name, operating system and
//! its version, whether the root file system is encrypted, and the custom
//! posture facts that administrators define as commands (as Zscaler's posture
//! profiles do: file present, process running, command output).
//!
//! A fact that cannot be read is left out of the report rather than guessed:
//! a device-group rule on a missing fact does not match, so an unreadable
//! fact fails closed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

/// The facts the agent reads by itself; each is `None` when unreadable here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub hostname: Option<String>,
    /// `windows`, `macos`, `linux`, `ios` or `android`, as the server knows them.
    pub os: Option<&'static str>,
    /// e.g. `12` for Debian 12, `14.5` for macOS 14.5.
    pub os_version: Option<String>,
    /// Linux: whether `/` sits on a dm-crypt (LUKS) device, through any LVM
    /// or other device-mapper layers in between.
    pub disk_encrypted: Option<bool>,
}

impl DeviceFacts {
    /// Reads this machine's facts.
    pub fn detect() -> Self {
        let os = server_os_name(std::env::consts::OS);
        Self {
            hostname: whoami::hostname().ok().and_then(clean_hostname),
            os,
            os_version: match os {
                Some("linux") => std::fs::read_to_string("/etc/os-release")
                    .ok()
                    .and_then(|text| os_release_version(&text)),
                Some("macos") => std::process::Command::new("sw_vers")
                    .arg("-productVersion")
                    .output()
                    .ok()
                    .filter(|out| out.status.success())
                    .and_then(|out| String::from_utf8(out.stdout).ok())
                    .map(|text| text.trim().to_owned())
                    .filter(|text| {
                        !text.is_empty() && text.chars().all(entitle_core::is_name_char)
                    }),
                _ => None,
            },
            disk_encrypted: match os {
                Some("linux") => std::fs::read_to_string("/proc/self/mountinfo")
                    .ok()
                    .and_then(|text| root_device(&text))
                    .and_then(|device| block_device_encrypted(Path::new("/sys"), device)),
                _ => None,
            },
        }
    }
}

/// The server's name for a Rust target OS, or `None` for one it does not know.
fn server_os_name(target_os: &str) -> Option<&'static str> {
    match target_os {
        "linux" => Some("linux"),
        "macos" => Some("macos"),
        "windows" => Some("windows"),
        "ios" => Some("ios"),
        "android" => Some("android"),
        _ => None,
    }
}

fn clean_hostname(name: String) -> Option<String> {
    let name = name.trim();
    // The server keeps a device's host name to the rules of every name.
    (!name.is_empty() && name.len() <= 253 && entitle_core::name_refusal(name).is_none())
        .then(|| name.to_owned())
}

/// `VERSION_ID` of an os-release file (`VERSION_ID="12"` → `12`).
///
/// Written by hand: the format is shell-style `KEY=value` lines, and this is
/// the one key read.
pub fn os_release_version(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("VERSION_ID="))
        .map(|value| value.trim().trim_matches(|c| c == '"' || c == '\''))
        .find(|value| {
            !value.is_empty() && value.len() <= 64 && value.chars().all(entitle_core::is_name_char)
        })
        .map(str::to_owned)
}

/// The `major:minor` of the device mounted at `/`, from `/proc/self/mountinfo`.
/// `None` for a root without a block device (overlay, tmpfs: major 0).
pub fn root_device(mountinfo: &str) -> Option<(u32, u32)> {
    // Fields: id, parent id, major:minor, root, mount point, …; the last
    // line for `/` is the one in effect.
    let device = mountinfo.lines().rev().find_map(|line| {
        let mut fields = line.split_whitespace();
        let device = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        (mount_point == "/").then_some(device)
    })?;
    let (major, minor) = device.split_once(':')?;
    let device = (major.parse().ok()?, minor.parse().ok()?);
    (device.0 != 0).then_some(device)
}

/// Whether the block device is, or sits on, a dm-crypt device: its
/// device-mapper UUID starts with `CRYPT-`, here or down its `slaves/`.
/// `None` when sysfs does not know the device.
pub fn block_device_encrypted(sys: &Path, (major, minor): (u32, u32)) -> Option<bool> {
    let device = sys.join("dev/block").join(format!("{major}:{minor}"));
    let device = std::fs::canonicalize(device).ok()?;
    Some(crypt_below(&device, 0))
}

fn crypt_below(device: &Path, depth: usize) -> bool {
    // Device stacks are a few layers deep; the bound stops a cycle.
    if depth > 8 {
        return false;
    }
    let uuid = std::fs::read_to_string(device.join("dm/uuid")).unwrap_or_default();
    if uuid.trim_start().starts_with("CRYPT-") {
        return true;
    }
    // A partition's holder relationship is on its disk; a mapped device's
    // lower devices are its `slaves/`.
    let slaves: Vec<PathBuf> = std::fs::read_dir(device.join("slaves"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| std::fs::canonicalize(entry.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    slaves.iter().any(|slave| crypt_below(slave, depth + 1))
}

/// A custom posture fact read by running a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostureCommand {
    pub key: String,
    pub command: String,
}

/// Longest posture key accepted from the command line.
const MAX_KEY: usize = 128;
/// Most output read from a posture command; the rest is not read.
const MAX_OUTPUT: u64 = 4096;
/// Longest text value reported (the server refuses longer ones).
const MAX_TEXT: usize = 1024;

impl std::str::FromStr for PostureCommand {
    type Err = String;

    /// `KEY=COMMAND`, as given to `--posture-command`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (key, command) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} must be KEY=COMMAND"))?;
        let key = key.trim();
        let valid_key = !key.is_empty()
            && key.len() <= MAX_KEY
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_key {
            return Err(format!(
                "posture key {key:?} must be 1 to {MAX_KEY} letters, digits, '_', '-' or '.'"
            ));
        }
        if command.trim().is_empty() {
            return Err(format!("the command for posture key {key:?} is empty"));
        }
        Ok(Self {
            key: key.to_owned(),
            command: command.to_owned(),
        })
    }
}

/// Why a posture command reported nothing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PostureFailure {
    pub key: String,
    pub reason: String,
}

/// Runs each command (through the platform's shell, with `timeout` each) and
/// returns the facts they reported and the keys that reported nothing.
pub async fn run_posture_commands(
    commands: &[PostureCommand],
    timeout: Duration,
) -> (Map<String, Value>, Vec<PostureFailure>) {
    let mut facts = Map::new();
    let mut failures = Vec::new();
    for command in commands {
        match run_one(&command.command, timeout).await {
            Ok(value) => {
                facts.insert(command.key.clone(), value);
            }
            Err(reason) => failures.push(PostureFailure {
                key: command.key.clone(),
                reason,
            }),
        }
    }
    (facts, failures)
}

async fn run_one(command: &str, timeout: Duration) -> Result<Value, String> {
    let mut shell = if cfg!(windows) {
        let mut shell = tokio::process::Command::new("cmd");
        shell.arg("/C").arg(command);
        shell
    } else {
        let mut shell = tokio::process::Command::new("sh");
        shell.arg("-c").arg(command);
        shell
    };
    shell
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // A command that outlives its timeout is killed, not left behind.
        .kill_on_drop(true);
    let mut child = shell.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| "no output pipe".to_owned())?;
    let run = async {
        let mut output = Vec::new();
        (&mut stdout)
            .take(MAX_OUTPUT)
            .read_to_end(&mut output)
            .await
            .map_err(|e| format!("cannot read its output: {e}"))?;
        // Whatever it writes past the bound is not waited for.
        drop(stdout);
        let status = child
            .wait()
            .await
            .map_err(|e| format!("cannot wait for it: {e}"))?;
        Ok::<_, String>((status, output))
    };
    let (status, output) = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("timed out after {} s", timeout.as_secs_f64()))??;
    if !status.success() {
        return Err(match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "killed by a signal".to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&output);
    posture_value(text.trim()).ok_or_else(|| "printed nothing usable".to_owned())
}

/// A command's trimmed output as a posture value: `true`, `false`, a number,
/// or text (without control characters or bidirectional overrides, which the
/// server refuses; at most 1,024 bytes).
pub fn posture_value(text: &str) -> Option<Value> {
    match text {
        "" => None,
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        text => {
            if let Some(number) = text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                return Some(Value::Number(number));
            }
            if text.len() > MAX_TEXT || !text.chars().all(entitle_core::is_name_char) {
                return None;
            }
            Some(Value::String(text.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_version_reads_version_id_quoted_or_not() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(os_release_version(debian).as_deref(), Some("12"));
        assert_eq!(
            os_release_version("ID=fedora\nVERSION_ID=40\n").as_deref(),
            Some("40")
        );
        assert_eq!(os_release_version("ID=arch\nBUILD_ID=rolling\n"), None);
        assert_eq!(os_release_version("VERSION_ID=\"\"\n"), None);
    }

    #[test]
    fn root_device_is_the_last_mount_of_slash_with_a_block_device() {
        let mountinfo = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
30 22 0:26 / /proc rw - proc proc rw
31 22 253:1 / /home rw - ext4 /dev/mapper/vg-home rw
";
        assert_eq!(root_device(mountinfo), Some((8, 2)));
        let remounted = format!("{mountinfo}40 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw\n");
        assert_eq!(root_device(&remounted), Some((253, 0)));
        let container = "500 400 0:51 / / rw - overlay overlay rw,lowerdir=/x\n";
        assert_eq!(
            root_device(container),
            None,
            "an overlay root is unknown, not unencrypted"
        );
        assert_eq!(root_device("garbage\n\n1 2 3\n"), None);
    }

    /// A sysfs tree: `/dev/block/MAJ:MIN` links to devices, device-mapper
    /// devices have `dm/uuid`, stacked devices list their lower ones in `slaves/`.
    fn sysfs(devices: &[(&str, &str, Option<&str>, &[&str])]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        let block = root.path().join("devices/virtual/block");
        std::fs::create_dir_all(root.path().join("dev/block")).expect("dir");
        for (name, numbers, uuid, _) in devices {
            let dir = block.join(name);
            std::fs::create_dir_all(dir.join("slaves")).expect("dir");
            if let Some(uuid) = uuid {
                std::fs::create_dir_all(dir.join("dm")).expect("dir");
                std::fs::write(dir.join("dm/uuid"), format!("{uuid}\n")).expect("write");
            }
            std::os::unix::fs::symlink(&dir, root.path().join("dev/block").join(numbers))
                .expect("link");
        }
        for (name, _, _, slaves) in devices {
            for slave in *slaves {
                std::os::unix::fs::symlink(
                    block.join(slave),
                    block.join(name).join("slaves").join(slave),
                )
                .expect("link");
            }
        }
        root
    }

    #[test]
    fn luks_is_found_directly_and_under_lvm() {
        let sys = sysfs(&[
            ("sda2", "8:2", None, &[]),
            ("sda3", "8:3", None, &[]),
            (
                "dm-0",
                "253:0",
                Some("CRYPT-LUKS2-0123abcd-luks-root"),
                &["sda3"],
            ),
            ("dm-1", "253:1", Some("LVM-abcdef"), &["dm-0"]),
            ("dm-2", "253:2", Some("LVM-plain"), &["sda2"]),
        ]);
        assert_eq!(
            block_device_encrypted(sys.path(), (253, 0)),
            Some(true),
            "LUKS itself"
        );
        assert_eq!(
            block_device_encrypted(sys.path(), (253, 1)),
            Some(true),
            "LVM on LUKS"
        );
        assert_eq!(
            block_device_encrypted(sys.path(), (253, 2)),
            Some(false),
            "LVM on a plain partition"
        );
        assert_eq!(
            block_device_encrypted(sys.path(), (8, 2)),
            Some(false),
            "a plain partition"
        );
        assert_eq!(
            block_device_encrypted(sys.path(), (9, 9)),
            None,
            "unknown device"
        );
    }

    #[test]
    fn a_host_name_the_server_would_refuse_is_not_sent() {
        assert_eq!(
            clean_hostname(" ada-mac ".into()).as_deref(),
            Some("ada-mac")
        );
        assert_eq!(clean_hostname("ada\u{202E}cam".into()), None);
        assert_eq!(clean_hostname("ada\nmac".into()), None);
        assert_eq!(clean_hostname("ada-mac\u{200B}".into()), None);
        assert_eq!(clean_hostname("Jose\u{301}s-mac".into()), None);
        assert_eq!(
            clean_hostname("Jos\u{e9}s-mac".into()).as_deref(),
            Some("Jos\u{e9}s-mac")
        );
        assert_eq!(clean_hostname("x".repeat(254)), None);
        assert_eq!(
            os_release_version("VERSION_ID=\"12\u{2066}\"\n"),
            None,
            "nor an OS version"
        );
    }

    #[test]
    fn posture_values_are_typed_and_bounded() {
        assert_eq!(posture_value("true"), Some(Value::Bool(true)));
        assert_eq!(posture_value("false"), Some(Value::Bool(false)));
        assert_eq!(posture_value("14.5"), Some(serde_json::json!(14.5)));
        assert_eq!(
            posture_value("running"),
            Some(Value::String("running".into()))
        );
        assert_eq!(posture_value(""), None);
        assert_eq!(posture_value("two\nlines"), None);
        assert_eq!(
            posture_value("on\u{202E}ffo"),
            None,
            "the server refuses it"
        );
        assert_eq!(
            posture_value("מוצפן"),
            Some(Value::String("מוצפן".into())),
            "right-to-left text needs no override"
        );
        assert_eq!(posture_value(&"x".repeat(2000)), None);
    }

    #[test]
    fn posture_command_flags_are_checked() {
        let parsed: PostureCommand = "firewall=ufw status | grep -q active && echo true"
            .parse()
            .expect("valid");
        assert_eq!(parsed.key, "firewall");
        assert_eq!(parsed.command, "ufw status | grep -q active && echo true");
        assert!("no-equals".parse::<PostureCommand>().is_err());
        assert!("=echo x".parse::<PostureCommand>().is_err());
        assert!("key=   ".parse::<PostureCommand>().is_err());
        assert!("bad key=echo".parse::<PostureCommand>().is_err());
    }

    #[tokio::test]
    async fn posture_commands_report_output_and_say_why_they_did_not() {
        let commands: Vec<PostureCommand> = [
            "agent_running=echo true",
            "score=printf ' 87 \\n'",
            "owner=echo it-department",
            "failing=echo true; exit 3",
            "slow=sleep 5; echo true",
            "silent=true",
            "flood=yes | head -c 100000",
        ]
        .iter()
        .map(|text| text.parse().expect("valid"))
        .collect();
        let started = std::time::Instant::now();
        let (facts, failures) = run_posture_commands(&commands, Duration::from_millis(500)).await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the slow command was cut short"
        );
        assert_eq!(facts.get("agent_running"), Some(&Value::Bool(true)));
        assert_eq!(facts.get("score"), Some(&serde_json::json!(87.0)));
        assert_eq!(
            facts.get("owner"),
            Some(&Value::String("it-department".into()))
        );
        let why = |key: &str| {
            failures
                .iter()
                .find(|f| f.key == key)
                .map(|f| f.reason.clone())
                .unwrap_or_default()
        };
        assert_eq!(why("failing"), "exited with status 3");
        assert!(why("slow").starts_with("timed out"), "{}", why("slow"));
        assert_eq!(why("silent"), "printed nothing usable");
        // Read up to the bound only; cut off, the pipeline fails or its
        // many lines are refused, and either way nothing is reported.
        assert!(!why("flood").is_empty());
        for key in ["failing", "slow", "silent", "flood"] {
            assert!(!facts.contains_key(key), "{key} reports nothing");
        }
    }

    #[test]
    fn this_machine_has_a_name_and_an_os() {
        let facts = DeviceFacts::detect();
        assert_eq!(facts.os, server_os_name(std::env::consts::OS));
        if cfg!(target_os = "linux") {
            assert!(facts.hostname.is_some(), "{facts:?}");
            assert_eq!(facts.os, Some("linux"));
        }
    }
}
