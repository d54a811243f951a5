use std::os::unix::process::ExitStatusExt;

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: IptablesArgs,
}

fn args(line: &str) -> IptablesArgs {
    let argv = std::iter::once("tollgate-iptables").chain(line.split_whitespace());
    Cli::try_parse_from(argv).unwrap().args
}

/// The steps as the printed script's lines, for reading.
fn lines(line: &str) -> Vec<String> {
    install(&args(line)).iter().map(Step::sh).collect()
}

#[test]
fn default_script() {
    let args = args("");
    assert_eq!(
        script(&args, &install(&args)),
        "\
#!/bin/sh
# tollgate iptables: outbound TCP to ports 80,443 from this network namespace
# goes to tollgate's transparent listener on port 15001 instead.
# These go out directly:
#   connections made by uid 1337 (tollgate itself, so it does not loop)
#   connections to loopback
#   TCP port 53 (DNS)
# Needs NET_ADMIN (an init container). Running it again replaces the
# rules; `tollgate iptables --remove` takes them away.
set -e
iptables -t nat -N TOLLGATE_OUTPUT 2>/dev/null || iptables -t nat -F TOLLGATE_OUTPUT
iptables -t nat -A TOLLGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN
iptables -t nat -A TOLLGATE_OUTPUT -d 127.0.0.0/8 -j RETURN
iptables -t nat -A TOLLGATE_OUTPUT -p tcp --dport 53 -j RETURN
iptables -t nat -A TOLLGATE_OUTPUT -p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports 15001
iptables -t nat -C OUTPUT -p tcp -j TOLLGATE_OUTPUT 2>/dev/null || iptables -t nat -A OUTPUT -p tcp -j TOLLGATE_OUTPUT
ip6tables -t nat -N TOLLGATE_OUTPUT 2>/dev/null || ip6tables -t nat -F TOLLGATE_OUTPUT
ip6tables -t nat -A TOLLGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN
ip6tables -t nat -A TOLLGATE_OUTPUT -d ::1/128 -j RETURN
ip6tables -t nat -A TOLLGATE_OUTPUT -p tcp --dport 53 -j RETURN
ip6tables -t nat -A TOLLGATE_OUTPUT -p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports 15001
ip6tables -t nat -C OUTPUT -p tcp -j TOLLGATE_OUTPUT 2>/dev/null || ip6tables -t nat -A OUTPUT -p tcp -j TOLLGATE_OUTPUT
"
    );
}

#[test]
fn all_ports_redirects_without_a_port_match() {
    let lines = lines("--all-ports --proxy-port 15006 --proxy-uid 1000");
    let redirects: Vec<&String> = lines.iter().filter(|l| l.contains("REDIRECT")).collect();
    assert_eq!(
        redirects,
        [
            "iptables -t nat -A TOLLGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15006",
            "ip6tables -t nat -A TOLLGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15006",
        ]
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("--uid-owner 1000 -j RETURN")));
    let parsed = Cli::try_parse_from(["t", "--all-ports", "--ports", "80"]);
    assert!(parsed.is_err(), "--all-ports and --ports conflict");
}

#[test]
fn exclusions_go_to_their_own_family() {
    let lines =
        lines("--exclude-cidr 10.1.2.3/8 --exclude-cidr fd00:9::/32 --exclude-cidr 192.0.2.7/32");
    let excluded = |program: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{program} ")) && l.contains("-d "))
            .map(|l| l.split_whitespace().nth(6).unwrap().to_string())
            .collect()
    };
    // The loopback range first, then the exclusions in the order given.
    assert_eq!(
        excluded("iptables"),
        ["127.0.0.0/8", "10.0.0.0/8", "192.0.2.7/32"]
    );
    assert_eq!(excluded("ip6tables"), ["::1/128", "fd00:9::/32"]);
    // Every exemption comes before the redirect, or it would exempt
    // nothing.
    let redirect = lines.iter().position(|l| l.contains("REDIRECT")).unwrap();
    let last_return = lines
        .iter()
        .rposition(|l| l.starts_with("iptables") && l.ends_with("RETURN"));
    assert!(last_return.unwrap() < redirect);
}

#[test]
fn no_ipv6_leaves_ip6tables_alone() {
    let only_v4 = |steps: &[Step]| steps.iter().all(|s| s.family == Family::V4);
    let args = args("--no-ipv6");
    assert!(only_v4(&install(&args)));
    assert!(only_v4(&removal(families(&args))));
    assert!(!script(&args, &install(&args)).contains("ip6tables"));
    // An IPv6 exclusion would silently exclude nothing.
    let e = check(&self::args("--no-ipv6 --exclude-cidr fd00::/8")).unwrap_err();
    assert!(e.contains("fd00::/8 is IPv6"), "{e}");
}

#[test]
fn gid_is_exempt_after_the_uid() {
    let lines = lines("--proxy-gid 1338 --no-ipv6");
    assert_eq!(
        lines[1..3],
        [
            "iptables -t nat -A TOLLGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "iptables -t nat -A TOLLGATE_OUTPUT -m owner --gid-owner 1338 -j RETURN",
        ]
    );
}

#[test]
fn bad_arguments_are_refused() {
    for line in [
        "--exclude-cidr 10.0.0.0/33",
        "--exclude-cidr 10.0.0.0",
        "--ports 0",
        "--proxy-port 70000",
        "--apply --remove",
    ] {
        let argv = std::iter::once("t").chain(line.split_whitespace());
        assert!(Cli::try_parse_from(argv).is_err(), "{line}");
    }
    let many: Vec<String> = (1..=16).map(|p| p.to_string()).collect();
    let e = check(&args(&format!("--ports {}", many.join(",")))).unwrap_err();
    assert!(e.contains("at most 15"), "{e}");
}

#[test]
fn removal_script() {
    let sh: Vec<String> = removal(&[Family::V4]).iter().map(Step::sh).collect();
    assert_eq!(
        sh,
        [
            "iptables -t nat -S OUTPUT >/dev/null",
            "while iptables -t nat -D OUTPUT -p tcp -j TOLLGATE_OUTPUT 2>/dev/null; do :; done",
            "if iptables -t nat -S TOLLGATE_OUTPUT >/dev/null 2>&1; then iptables -t nat -F TOLLGATE_OUTPUT; iptables -t nat -X TOLLGATE_OUTPUT; fi",
        ]
    );
}

fn output(code: i32, stderr: &str) -> io::Result<Output> {
    Ok(Output {
        // A wait status: the exit code sits in the second byte.
        status: ExitStatus::from_raw(code << 8),
        stdout: Vec::new(),
        stderr: stderr.as_bytes().to_vec(),
    })
}

/// The operations (`-N`, `-A`, …) a fake iptables was asked for; it
/// answers each with what `answer` says.
fn asked(steps: &[Step], mut answer: impl FnMut(&[String]) -> io::Result<Output>) -> Vec<String> {
    let mut ops = Vec::new();
    let mut run = |_: &str, argv: &[String]| {
        ops.push(argv[2].clone());
        answer(argv)
    };
    for step in steps {
        step.run(&mut run).unwrap();
    }
    ops
}

#[test]
fn a_second_apply_flushes_and_skips_as_the_script_does() {
    // The chain and the jump are there already: -N fails, -C succeeds.
    let ops = asked(&install(&args("--no-ipv6")), |argv| {
        match argv[2].as_str() {
            "-N" => output(1, "iptables: Chain already exists."),
            _ => output(0, ""),
        }
    });
    assert_eq!(ops, ["-N", "-F", "-A", "-A", "-A", "-A", "-C"]);
}

#[test]
fn removal_deletes_every_copy_of_the_jump_and_stops() {
    let mut copies = 2;
    let ops = asked(&removal(&[Family::V4]), |argv| match argv[2].as_str() {
        "-D" if copies > 0 => {
            copies -= 1;
            output(0, "")
        }
        "-D" => output(
            1,
            "iptables: Bad rule (does a matching rule exist in that chain?).",
        ),
        _ => output(0, ""),
    });
    assert_eq!(ops, ["-S", "-D", "-D", "-D", "-S", "-F", "-X"]);
    // Nothing installed: only the probes run.
    let ops = asked(&removal(&[Family::V4]), |argv| {
        match (argv[2].as_str(), argv[3].as_str()) {
            ("-S", "OUTPUT") => output(0, ""),
            _ => output(1, "iptables: No chain/target/match by that name."),
        }
    });
    assert_eq!(ops, ["-S", "-D", "-S"]);
}

#[test]
fn a_refusal_names_the_command_and_what_iptables_said() {
    let mut run = |_: &str, _: &[String]| {
        output(4, "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n")
    };
    let e = install(&args(""))[1].run(&mut run).unwrap_err().to_string();
    assert_eq!(
        e,
        "`iptables -t nat -A TOLLGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN` failed \
         (exit status: 4): iptables v1.8.9 (nf_tables): Could not fetch rule set \
         generation id: Permission denied (you must be root)"
    );
    // A program that cannot start is an error even where a refusal is not.
    let mut missing = |_: &str, _: &[String]| Err(io::Error::from(io::ErrorKind::NotFound));
    let e = jump(Family::V6, Kind::DeleteEvery)
        .run(&mut missing)
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot run `ip6tables -t nat -D OUTPUT"),
        "{e}"
    );
}
