//! `entitle agent install`: a systemd unit that runs the agent as a service.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Flags of `entitle agent install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The server the agent talks to.
    #[arg(long, env = "ENTITLE_SERVER")]
    server: String,
    /// Where to write the unit.
    #[arg(long, default_value = "/etc/systemd/system/entitle-agent.service")]
    unit_file: PathBuf,
    /// Print the unit instead of writing it.
    #[arg(long)]
    print: bool,
    /// The agent's state directory (default: /var/lib/entitle-agent, made by systemd).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The entitle binary the unit runs (default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// A file of `NAME=value` lines for the agent, e.g. ENTITLE_ENROLLMENT_KEY
    /// and ENTITLE_USER_NAME for the first run, so that secrets stay out of the unit.
    #[arg(long, default_value = "/etc/entitle/agent.env")]
    environment_file: PathBuf,
    /// Leave out NoNewPrivileges=: hooks that use setuid programs (sudo) need it.
    #[arg(long)]
    hooks_need_setuid: bool,
    /// Further flags of `entitle agent run`, after `--` (hooks, posture commands, …).
    #[arg(last = true)]
    agent_args: Vec<String>,
}

/// Writes or prints the unit.
#[allow(clippy::print_stdout)]
pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe().context("cannot tell where this entitle binary is")?,
    };
    let unit = unit(&args, &binary.display().to_string());
    if args.print {
        print!("{unit}");
        return Ok(());
    }
    if let Some(folder) = args.unit_file.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    std::fs::write(&args.unit_file, unit)
        .with_context(|| format!("cannot write {}", args.unit_file.display()))?;
    println!(
        "wrote {}; run `systemctl daemon-reload && systemctl enable --now {}`",
        args.unit_file.display(),
        args.unit_file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    Ok(())
}

/// The unit's text.
fn unit(args: &InstallArgs, binary: &str) -> String {
    let mut command = vec![
        binary.to_owned(),
        "agent".into(),
        "run".into(),
        "--server".into(),
        args.server.clone(),
    ];
    if let Some(dir) = &args.state_dir {
        command.push("--state-dir".into());
        command.push(dir.display().to_string());
    }
    command.extend(args.agent_args.iter().cloned());
    let exec = command
        .iter()
        .map(|arg| quote(arg))
        .collect::<Vec<_>>()
        .join(" ");
    // Hooks start and stop the device's services, so the agent keeps root's
    // reach over the system; what it does not need is closed.
    let no_new_privileges = if args.hooks_need_setuid {
        "# NoNewPrivileges= is off: the hooks run setuid programs.\n"
    } else {
        "NoNewPrivileges=yes\n"
    };
    format!(
        "# Written by `entitle agent install`.\n\
[Unit]\n\
Description=entitle device agent\n\
Wants=network-online.target\n\
After=network-online.target\n\
\n\
[Service]\n\
Type=simple\n\
ExecStart={exec}\n\
EnvironmentFile=-{env}\n\
# The agent's default state directory is $STATE_DIRECTORY: /var/lib/entitle-agent.\n\
StateDirectory=entitle-agent\n\
StateDirectoryMode=0700\n\
UMask=0077\n\
Restart=on-failure\n\
RestartSec=5s\n\
{no_new_privileges}\
PrivateTmp=yes\n\
ProtectKernelModules=yes\n\
ProtectKernelTunables=yes\n\
ProtectControlGroups=yes\n\
RestrictRealtime=yes\n\
RestrictSUIDSGID=yes\n\
LockPersonality=yes\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n",
        env = args.environment_file.display(),
    )
}

/// One word of `ExecStart=`, quoted for systemd: `%` and `$` would otherwise
/// be expanded, and spaces split words.
fn quote(word: &str) -> String {
    let escaped = word
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    let plain = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if plain && escaped == word {
        escaped
    } else {
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(quote("--server"), "--server");
        assert_eq!(
            quote("private_access=systemctl start \"zpa\" $X 100%"),
            "\"private_access=systemctl start \\\"zpa\\\" $$X 100%%\""
        );
        assert_eq!(quote(""), "\"\"");
    }
}
