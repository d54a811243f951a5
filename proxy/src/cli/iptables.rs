//! `tollgate iptables`: the nat rules that send a pod's outbound TCP to
//! tollgate's transparent listener. The rules are data — a list of
//! [`Step`]s — rendered once as a POSIX sh script and run once directly
//! (`--apply`, `--remove`), so the script an operator reads is exactly
//! what `--apply` does.

use std::fmt::Write as _;
use std::io;
use std::process::{Command, ExitCode, ExitStatus, Output};

use ipnet::IpNet;

/// A chain of our own: reinstalling flushes it, and removing it leaves
/// every other rule in the namespace as it was.
const CHAIN: &str = "TOLLGATE_OUTPUT";

/// The `multiport` match takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;

/// clap's exit code for every other bad argument.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, clap::Args)]
pub struct IptablesArgs {
    /// Install the rules in this network namespace (needs NET_ADMIN)
    /// instead of printing them as a shell script. Running it again
    /// replaces them.
    #[arg(long, conflicts_with = "remove")]
    apply: bool,
    /// Take the rules away from this network namespace (needs NET_ADMIN);
    /// succeeds when none are installed.
    #[arg(long)]
    remove: bool,
    /// Port of tollgate's transparent listener on loopback.
    #[arg(long, default_value_t = 15001, value_parser = clap::value_parser!(u16).range(1..))]
    proxy_port: u16,
    /// Destination TCP ports to redirect, comma-separated (at most 15).
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [80, 443],
        value_parser = clap::value_parser!(u16).range(1..),
        conflicts_with = "all_ports"
    )]
    ports: Vec<u16>,
    /// Redirect TCP to every destination port (DNS on port 53 still goes
    /// out directly).
    #[arg(long)]
    all_ports: bool,
    /// The uid tollgate runs as. Its own connections go out directly;
    /// without this exemption they would loop back to it.
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// A gid whose connections also go out directly.
    #[arg(long)]
    proxy_gid: Option<u32>,
    /// A destination left alone (repeatable). IPv4 ranges go to iptables,
    /// IPv6 ranges to ip6tables.
    #[arg(long, value_name = "CIDR", value_parser = cidr)]
    exclude_cidr: Vec<IpNet>,
    /// Leave ip6tables alone, for a kernel without IPv6. IPv6 traffic is
    /// then not redirected at all.
    #[arg(long)]
    no_ipv6: bool,
}

pub fn iptables(args: IptablesArgs) -> ExitCode {
    if let Err(e) = check(&args) {
        eprintln!("tollgate iptables: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let families = families(&args);
    let steps = if args.remove {
        removal(families)
    } else {
        install(&args)
    };
    if !(args.apply || args.remove) {
        print!("{}", script(&args, &steps));
        return ExitCode::SUCCESS;
    }
    let mut run = |program: &str, argv: &[String]| Command::new(program).args(argv).output();
    for step in &steps {
        if let Err(e) = step.run(&mut run) {
            eprintln!("tollgate iptables: {e}");
            return ExitCode::FAILURE;
        }
    }
    let programs: Vec<&str> = families.iter().map(|f| f.program()).collect();
    let programs = programs.join(", ");
    if args.remove {
        println!("tollgate iptables: removed {CHAIN} from {programs}");
    } else {
        println!(
            "tollgate iptables: installed {CHAIN} in {programs}: outbound TCP to {} goes to port {}, uid {} excepted",
            ports_wording(&args),
            args.proxy_port,
            args.proxy_uid
        );
    }
    ExitCode::SUCCESS
}

/// ipnet's own message ("invalid IP address syntax") does not say a
/// prefix length is wanted.
fn cidr(s: &str) -> Result<IpNet, String> {
    s.parse()
        .map_err(|_| "not an address range like 10.0.0.0/8 or fd00::/8".to_string())
}

/// What clap cannot check alone.
fn check(args: &IptablesArgs) -> Result<(), String> {
    if !args.all_ports && args.ports.len() > MULTIPORT_MAX {
        return Err(format!(
            "--ports lists {} ports; iptables matches at most {MULTIPORT_MAX} in one rule (or use --all-ports)",
            args.ports.len()
        ));
    }
    if args.no_ipv6 {
        if let Some(net) = args.exclude_cidr.iter().find(|n| Family::V6.holds(n)) {
            // Dropping it silently would leave the operator believing
            // traffic to it is excluded.
            return Err(format!(
                "--exclude-cidr {net} is IPv6, but --no-ipv6 leaves ip6tables alone"
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    fn holds(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

fn families(args: &IptablesArgs) -> &'static [Family] {
    if args.no_ipv6 {
        &[Family::V4]
    } else {
        &[Family::V4, Family::V6]
    }
}

/// One rule or chain operation in the `nat` table, and what to do when
/// its effect is already there — which is what makes a second run safe.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    family: Family,
    kind: Kind,
    /// A chain name, or a chain followed by a rule's matches and target.
    rule: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `-S`, output unused. It fails loudly where iptables cannot work at
    /// all (no NET_ADMIN), so the tolerant steps after it only ever
    /// tolerate a rule or chain that is not there.
    List,
    /// `-N`, or `-F` when the chain exists: a second install replaces the
    /// first instead of adding to it.
    CreateOrFlush,
    /// `-A`.
    Append,
    /// `-A` unless `-C` finds the rule there already.
    AppendUnlessPresent,
    /// `-D` until no copy is left.
    DeleteEvery,
    /// `-F` then `-X`, when the chain exists.
    DeleteChainIfPresent,
}

fn step(family: Family, kind: Kind, rule: &[&str]) -> Step {
    Step {
        family,
        kind,
        rule: rule.iter().map(|s| s.to_string()).collect(),
    }
}

/// The jump from OUTPUT: every locally made TCP connection passes through
/// our chain.
fn jump(family: Family, kind: Kind) -> Step {
    step(family, kind, &["OUTPUT", "-p", "tcp", "-j", CHAIN])
}

fn install(args: &IptablesArgs) -> Vec<Step> {
    let mut steps = Vec::new();
    for &family in families(args) {
        let ret = |matches: &[&str]| {
            let rule = [&[CHAIN], matches, &["-j", "RETURN"]].concat();
            step(family, Kind::Append, &rule)
        };
        steps.push(step(family, Kind::CreateOrFlush, &[CHAIN]));
        let uid = args.proxy_uid.to_string();
        steps.push(ret(&["-m", "owner", "--uid-owner", &uid]));
        if let Some(gid) = args.proxy_gid {
            steps.push(ret(&["-m", "owner", "--gid-owner", &gid.to_string()]));
        }
        steps.push(ret(&["-d", family.loopback()]));
        // DNS over TCP (a resolver's fallback for long answers) is no
        // business of an HTTP proxy; it matters with --all-ports.
        steps.push(ret(&["-p", "tcp", "--dport", "53"]));
        for net in args.exclude_cidr.iter().filter(|n| family.holds(n)) {
            // Host bits cleared, as iptables itself lists the range.
            steps.push(ret(&["-d", &net.trunc().to_string()]));
        }
        let to_port = args.proxy_port.to_string();
        let ports = ports_list(&args.ports);
        let mut redirect = vec![CHAIN, "-p", "tcp"];
        if !args.all_ports {
            redirect.extend(["-m", "multiport", "--dports", &ports]);
        }
        redirect.extend(["-j", "REDIRECT", "--to-ports", &to_port]);
        steps.push(step(family, Kind::Append, &redirect));
        // Last, so a first install sends traffic into the chain only once
        // the chain is complete.
        steps.push(jump(family, Kind::AppendUnlessPresent));
    }
    steps
}

fn removal(families: &[Family]) -> Vec<Step> {
    let mut steps = Vec::new();
    for &family in families {
        steps.push(step(family, Kind::List, &["OUTPUT"]));
        // Copies, if something appended the jump by hand as well.
        steps.push(jump(family, Kind::DeleteEvery));
        steps.push(step(family, Kind::DeleteChainIfPresent, &[CHAIN]));
    }
    steps
}

fn ports_list(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.join(",")
}

fn ports_wording(args: &IptablesArgs) -> String {
    if args.all_ports {
        "every port".into()
    } else {
        format!("ports {}", ports_list(&args.ports))
    }
}

/// One iptables command that could not be run, or said no.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("cannot run `{command}`: {source}")]
    NotRun { command: String, source: io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Refused {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// Runs one program with its arguments; a seam for the tests.
type Run<'a> = dyn FnMut(&str, &[String]) -> io::Result<Output> + 'a;

impl Step {
    fn argv(&self, op: &str) -> Vec<String> {
        let mut argv: Vec<String> = ["-t", "nat", op].map(String::from).into();
        argv.extend(self.rule.iter().cloned());
        argv
    }

    /// The command line; the arguments need no quoting, being numbers,
    /// address ranges and fixed words.
    fn line(&self, op: &str) -> String {
        format!("{} {}", self.family.program(), self.argv(op).join(" "))
    }

    fn sh(&self) -> String {
        let line = |op: &str| self.line(op);
        match self.kind {
            Kind::List => format!("{} >/dev/null", line("-S")),
            Kind::CreateOrFlush => format!("{} 2>/dev/null || {}", line("-N"), line("-F")),
            Kind::Append => line("-A"),
            Kind::AppendUnlessPresent => format!("{} 2>/dev/null || {}", line("-C"), line("-A")),
            Kind::DeleteEvery => format!("while {} 2>/dev/null; do :; done", line("-D")),
            Kind::DeleteChainIfPresent => format!(
                "if {} >/dev/null 2>&1; then {}; {}; fi",
                line("-S"),
                line("-F"),
                line("-X")
            ),
        }
    }

    /// What [`Step::sh`] says, done. Only a refusal is tolerated where sh
    /// silences one: a program that cannot start at all is always an error.
    fn run(&self, run: &mut Run) -> Result<(), Failed> {
        let mut call = |op: &str| {
            let argv = self.argv(op);
            match run(self.family.program(), &argv) {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(Failed::Refused {
                    command: self.line(op),
                    status: out.status,
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                }),
                Err(source) => Err(Failed::NotRun {
                    command: self.line(op),
                    source,
                }),
            }
        };
        let succeeded = |result: Result<(), Failed>| match result {
            Ok(()) => Ok(true),
            Err(Failed::Refused { .. }) => Ok(false),
            Err(e) => Err(e),
        };
        match self.kind {
            Kind::List => call("-S"),
            Kind::Append => call("-A"),
            Kind::CreateOrFlush => match succeeded(call("-N"))? {
                true => Ok(()),
                false => call("-F"),
            },
            Kind::AppendUnlessPresent => match succeeded(call("-C"))? {
                true => Ok(()),
                false => call("-A"),
            },
            Kind::DeleteEvery => {
                while succeeded(call("-D"))? {}
                Ok(())
            }
            Kind::DeleteChainIfPresent => match succeeded(call("-S"))? {
                true => call("-F").and_then(|()| call("-X")),
                false => Ok(()),
            },
        }
    }
}

fn script(args: &IptablesArgs, steps: &[Step]) -> String {
    let mut exempt = vec![format!(
        "connections made by uid {} (tollgate itself, so it does not loop)",
        args.proxy_uid
    )];
    if let Some(gid) = args.proxy_gid {
        exempt.push(format!("connections made by gid {gid}"));
    }
    exempt.push("connections to loopback".into());
    exempt.push("TCP port 53 (DNS)".into());
    exempt.extend(args.exclude_cidr.iter().map(|n| n.trunc().to_string()));
    let mut out = String::from("#!/bin/sh\n");
    let _ = writeln!(
        out,
        "# tollgate iptables: outbound TCP to {} from this network namespace\n\
         # goes to tollgate's transparent listener on port {} instead.\n\
         # These go out directly:",
        ports_wording(args),
        args.proxy_port
    );
    for line in exempt {
        let _ = writeln!(out, "#   {line}");
    }
    out.push_str(
        "# Needs NET_ADMIN (an init container). Running it again replaces the\n\
         # rules; `tollgate iptables --remove` takes them away.\n\
         set -e\n",
    );
    for step in steps {
        out.push_str(&step.sh());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
