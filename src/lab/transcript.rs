//! Client-library scenarios for the compatibility matrices (`tests/pg/matrix.rs`,
//! `tests/redis/matrix.rs`): a script in another language runs the same steps against a URL
//! and prints its transcript, a JSON object of step name → result, to compare direct runs
//! with runs through Pake.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Step name → what the library saw.
pub type Transcript = BTreeMap<String, serde_json::Value>;

/// Run `program options… script args…` in `dir` (at most `limit`) and read its transcript.
/// `command` is the program and its options (`["java", "-cp", jar]`). The error names what
/// failed and carries the script's output.
pub async fn run(
    dir: &Path,
    command: &[&str],
    script: &str,
    args: &[&str],
    limit: Duration,
) -> Result<Transcript, String> {
    let (program, options) = command.split_first().ok_or("no program to run")?;
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new(program)
            .args(options)
            .arg(script)
            .args(args)
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{program} {script} did not finish within {limit:?}"))?
    .map_err(|e| format!("{program} {script}: {e} (run scripts/deps.sh)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{program} {script} {args:?} failed (scripts/deps.sh installs the libraries): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_str(stdout.trim()).map_err(|e| format!("not a transcript ({e}): {stdout}"))
}
