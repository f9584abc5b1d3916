//! `clearance completions` and `clearance man`: shell completions and man pages, made
//! from the command-line definition itself, so they say what `--help` says.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::output::Failure;

/// Print shell completions for `clearance` (for example `clearance completions bash >
/// ~/.local/share/bash-completion/completions/clearance`).
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    shell: clap_complete::Shell,
}

/// Write a man page for `clearance` and one for each subcommand (`clearance-serve.1`,
/// `clearance-policy-push.1`, ...) into a directory; read them with `man -l FILE`, or put
/// the directory on MANPATH (under `man1/`).
#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {
    /// The directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub(crate) fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    let mut cmd = crate::Cli::command();
    // Generated into memory first: the generator panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "clearance", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Error(e.into())),
        _ => Ok(()),
    }
}

pub(crate) fn man(args: &ManArgs) -> Result<(), Failure> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating `{}`", args.out.display()))?;
    let written = write_pages(&args.out)?;
    eprintln!("wrote {written} man pages to {}", args.out.display());
    Ok(())
}

/// Every page, `clearance.1` first; returns how many were written.
pub(crate) fn write_pages(dir: &std::path::Path) -> anyhow::Result<usize> {
    let mut cmd = crate::Cli::command();
    cmd.build();
    let mut count = 0;
    write_tree(&cmd, dir, &mut count)?;
    Ok(count)
}

fn write_tree(cmd: &clap::Command, dir: &std::path::Path, count: &mut usize) -> anyhow::Result<()> {
    // After `build`, a subcommand's display name is its whole path: `clearance-policy-push`.
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .render(&mut out)
        .with_context(|| format!("rendering `{name}`"))?;
    std::fs::write(&path, out).with_context(|| format!("writing `{}`", path.display()))?;
    *count += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_tree(sub, dir, count)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_man_page_for_every_command_and_completions_for_every_shell() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let count = write_pages(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let page = std::fs::read_to_string(dir.path().join("clearance-policy-push.1")).unwrap_or_default();
        // roff escapes each `-`.
        assert!(page.contains(r"\-\-policies"), "{page}");
        assert!(dir.path().join("clearance-recover-admin.1").exists());
        assert!(count > 40, "{count} pages");
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut crate::Cli::command(), "clearance", &mut script);
            let script = String::from_utf8_lossy(&script);
            assert!(
                script.contains("recover-admin") && script.contains("execution-id-file"),
                "{shell}"
            );
        }
    }
}
