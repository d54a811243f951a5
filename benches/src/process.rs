//! Child processes of the benchmark, optionally pinned to a CPU, killed
//! when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct Participant {
    child: Child,
    pub addr: SocketAddr,
    /// Every listener the process logged up to and including the one
    /// waited for, by its `listener=` name: a `tollgate run` deciding with
    /// tasks also serves the decision API.
    listeners: Vec<(String, SocketAddr)>,
    /// Files the process reads (configuration); removed on drop.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `taskset -c CPU program` when pinning, else `program`.
pub fn command(program: &Path, cpu: Option<&str>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Participant {
    /// The process id (`taskset` execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The folder of files the process was started with, if any.
    pub fn dir(&self) -> Option<&Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// The address of the listener logged as `listener=name`, if it was
    /// logged before the one [`Participant::from_log`] waited for.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    /// Spawn and wait for a stderr line containing `marker` and an
    /// `address=IP:PORT` field.
    pub fn from_log(
        mut cmd: Command,
        marker: &str,
        dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Participant> {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let stderr = BufReader::new(child.stderr.take().context("stderr")?);
        let deadline = Instant::now() + Duration::from_secs(30);
        let field = |line: &str, name: &str| {
            line.split_whitespace()
                .find_map(|t| t.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_string())
        };
        let mut listeners = Vec::new();
        let child_id = child.id();
        let mut lines = stderr.lines();
        while let Some(line) = lines.next() {
            let line = line?;
            if let (Some(name), Some(addr)) = (field(&line, "listener="), field(&line, "address="))
            {
                if let Ok(addr) = addr.parse() {
                    listeners.push((name, addr));
                }
            }
            if line.contains(marker) {
                let addr = field(&line, "address=")
                    .context("address= in the log line")?
                    .parse()?;
                // Keep reading: a process whose stderr is closed fails at
                // its next log line (tracing reports the failed write on
                // stderr, and that panics), and what it says later, a
                // warning under load, belongs in the harness's output.
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        eprintln!("  [pid {child_id}] {line}");
                    }
                });
                return Ok(Participant {
                    child,
                    addr,
                    listeners,
                    _dir: dir,
                });
            }
            anyhow::ensure!(Instant::now() < deadline, "no `{marker}` line in time");
        }
        bail!("process exited before `{marker}`")
    }

    /// Spawn and wait until `addr` accepts connections.
    pub fn at(
        mut cmd: Command,
        addr: SocketAddr,
        dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Participant> {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "{addr} never accepted");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Participant {
            child,
            addr,
            listeners: Vec::new(),
            _dir: dir,
        })
    }
}

/// Put the calling thread, and every thread it starts later, on one CPU.
pub fn pin_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        anyhow::ensure!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0,
            "sched_setaffinity failed"
        );
    }
    Ok(())
}

/// How long an idle vCPU polls before it halts, when the guest's
/// `haltpoll` cpuidle driver is loaded. At 0 every idle vCPU halts at once,
/// and waking it again goes through the hypervisor: that slows whatever
/// hands work between the two CPUs (`docs/benchmarks/history.md`,
/// "Tunnel: where the last tenth goes").
pub fn guest_halt_poll_ns() -> Option<u64> {
    std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A free loopback port (bound and released: fine for a benchmark).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Per CPU, time busy and time in all so far (clock ticks, from
/// /proc/stat). Busy is everything but idle and iowait; softirq counts,
/// because on loopback a sender's CPU does the receiver's TCP work too.
pub fn cpu_ticks() -> anyhow::Result<Vec<(u64, u64)>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let ticks = l
                .split_whitespace()
                .skip(1)
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()?;
            let all: u64 = ticks.iter().take(8).sum();
            let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
            Ok((all - idle, all))
        })
        .collect()
}

/// Per CPU, the share of time it was busy between two [`cpu_ticks`].
pub fn busy_between(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|((b0, a0), (b1, a1))| (b1 - b0) as f64 / (a1 - a0).max(1) as f64)
        .collect()
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / per_second))
}
