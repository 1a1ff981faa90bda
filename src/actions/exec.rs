//! The `exec` runner: a program with the event on stdin and a clean
//! environment, started in the `SCHED_IDLE` class (`Spawner`).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{failed, OUTPUT_LIMIT};
use crate::store::{AttemptRow, DueDelivery};

/// Starts programs from a thread of its own in the `SCHED_IDLE` class, so
/// that they inherit it, inside the runtime of the thread that created it
/// (which then drives their pipes and reaps them).
#[derive(Debug, Clone)]
pub(crate) struct Spawner {
    requests: std::sync::mpsc::Sender<SpawnRequest>,
}

type SpawnRequest = (
    tokio::process::Command,
    tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
);

impl Spawner {
    /// Must be called inside a tokio runtime.
    pub(crate) fn start() -> std::io::Result<Spawner> {
        let runtime = tokio::runtime::Handle::current();
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("vodhook-spawner".to_owned())
            .spawn(move || {
                lower_priority();
                let _inside = runtime.enter();
                // Ends when the last `Spawner` is dropped.
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Spawner { requests })
    }

    pub(crate) async fn spawn(
        &self,
        command: tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let stopped = || std::io::Error::other("the program spawner has stopped");
        let (reply, spawned) = tokio::sync::oneshot::channel();
        self.requests
            .send((command, reply))
            .map_err(|_| stopped())?;
        spawned.await.map_err(|_| stopped())?
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class: it runs only on CPU
/// that no other thread wants, and gives way at once when one does. The
/// processes it starts inherit it.
fn lower_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        tracing::warn!(
            ?error,
            "cannot lower the priority of action programs; they run at normal priority"
        );
    }
}
/// Reads up to [`OUTPUT_LIMIT`] bytes and drains the rest.
async fn read_bounded(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    let mut truncated = false;
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if truncated {
        text.push_str("\n[output truncated]");
    }
    text
}

/// The daemon's environment variables a program gets (when set).
const INHERITED_ENV: [&str; 3] = ["PATH", "LANG", "TZ"];

/// An event value as an environment variable, which cannot hold a NUL:
/// backslashes and control characters are escaped as in a JSON string
/// (`\\`, `\n`, `\t`, `\r`, `\u0000`); any other value is unchanged.
pub fn env_value(value: &str) -> Cow<'_, str> {
    if !value.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Control characters are all in the Basic Multilingual Plane.
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub(crate) async fn run_exec(
    exec: &[String],
    env: &std::collections::BTreeMap<String, String>,
    delivery: &DueDelivery,
    timeout: Duration,
    spawner: &Spawner,
) -> AttemptRow {
    let event = &delivery.event;
    let mut command = tokio::process::Command::new(&exec[0]);
    // A clean environment: the daemon's own holds its secrets.
    command.env_clear();
    for name in INHERITED_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let text = |value: Option<&str>| env_value(value.unwrap_or_default()).into_owned();
    command
        .args(&exec[1..])
        .envs(env)
        .env("VODHOOK_EVENT_ID", event.id.to_string())
        .env("VODHOOK_EVENT_TYPE", text(Some(&event.meta.event_type)))
        .env("VODHOOK_FILE_ID", text(event.meta.file_id.as_deref()))
        .env("VODHOOK_TASK_ID", text(event.meta.task_id.as_deref()))
        .env("VODHOOK_STATUS", text(event.meta.status.as_deref()))
        .env("VODHOOK_DELIVERY_ID", delivery.id.to_string())
        .env("VODHOOK_ATTEMPT", (delivery.attempts + 1).to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so that a timeout kills what it started too.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match spawner.spawn(command).await {
        Ok(child) => child,
        Err(error) => return failed(format!("cannot start {}: {error}", exec[0])),
    };
    let pid = child.id();
    let stdin = child.stdin.take();
    let raw = delivery.raw.clone();
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // A program that does not read its input is fine.
            let _ = stdin.write_all(&raw).await;
            let _ = stdin.shutdown().await;
        }
    });
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(read_bounded(out)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(read_bounded(err)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let mut outcome = match waited {
        Ok(Ok(status)) => AttemptRow {
            ok: status.success(),
            exit_code: status.code(),
            error: (!status.success()).then(|| format!("exited with {status}")),
            ..AttemptRow::default()
        },
        Ok(Err(error)) => failed(format!("cannot wait for the program: {error}")),
        Err(_) => {
            kill_group(pid);
            let _ = child.kill().await;
            failed(format!("timed out after {} s; killed", timeout.as_secs()))
        }
    };
    writer.abort();
    // Grandchildren may hold the pipes open: do not wait for them long.
    let collect = |handle: Option<tokio::task::JoinHandle<String>>| async move {
        match handle {
            Some(handle) => tokio::time::timeout(Duration::from_secs(1), handle)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        }
    };
    outcome.stdout = collect(stdout).await;
    outcome.stderr = collect(stderr).await;
    outcome
}

fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    #[cfg(not(unix))]
    let _ = pid;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_escape_control_characters_and_backslashes_only() {
        assert!(matches!(
            env_value("5285890784273533167"),
            Cow::Borrowed("5285890784273533167")
        ));
        assert!(matches!(env_value("视频 ü"), Cow::Borrowed("视频 ü")));
        assert_eq!(
            env_value("a\0b\nc\td\re\\f\u{1b}g\u{7f}h\u{85}"),
            r"a\u0000b\nc\td\re\\f\u001bg\u007fh\u0085"
        );
    }
}
