//! Network entries (`xl-network-configuration(5)`, xl's `parse_nic_config`,
//! xm's `configure_vifs`): a comma list of `key=value` items and the flags
//! `trusted`/`untrusted`. An empty entry is one NIC with default settings.
//! Unknown keys are errors (xm refused them; xl printed and went on).

use std::fmt;
use std::net::IpAddr;

use super::error::ErrorKind;

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `xx:xx:xx:xx:xx:xx` (two hex digits per byte, either case).
    /// Refuses multicast/broadcast and all-zero addresses: a NIC needs a
    /// unicast address.
    pub fn parse(s: &str) -> Result<MacAddr, &'static str> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts
                .next()
                .ok_or("expected six bytes written as xx:xx:xx:xx:xx:xx")?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err("expected six bytes written as xx:xx:xx:xx:xx:xx");
            }
            *byte = u8::from_str_radix(p, 16)
                .map_err(|_| "expected six bytes written as xx:xx:xx:xx:xx:xx")?;
        }
        if parts.next().is_some() {
            return Err("expected six bytes written as xx:xx:xx:xx:xx:xx");
        }
        if out[0] & 1 != 0 {
            return Err(
                "multicast address (low bit of the first byte set); a NIC needs a unicast address",
            );
        }
        if out == [0; 6] {
            return Err("all-zero address");
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// `rate=RATE/s[@INTERVAL]` as xl computes it (`libxlu_vif.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VifRate {
    /// Bytes per second.
    pub bytes_per_sec: u64,
    /// Credit replenishment interval in microseconds (default 50 ms).
    pub interval_us: u32,
}

impl VifRate {
    /// Parses `10Mb/s`, `250KB/s`, `1MB/s@20ms`.
    pub fn parse(s: &str) -> Result<VifRate, &'static str> {
        let (rate, interval) = match s.split_once('@') {
            Some((r, i)) => (r, Some(i)),
            None => (s, None),
        };
        let r = rate.strip_suffix("/s").ok_or("rate must end in /s")?;
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        let (num, unit) = r.split_at(digits);
        let n: u64 = num.parse().map_err(|_| "rate needs a number")?;
        if n == 0 || n > u64::from(u32::MAX) {
            return Err("rate out of range");
        }
        let (mult, bits) = match unit {
            "GB" => (1_000_000_000, false),
            "MB" => (1_000_000, false),
            "KB" => (1_000, false),
            "B" => (1, false),
            "Gb" => (1_000_000_000, true),
            "Mb" => (1_000_000, true),
            "Kb" => (1_000, true),
            "b" => (1, true),
            _ => return Err("rate unit must be GB, MB, KB, B, Gb, Mb, Kb or b"),
        };
        let mut bytes_per_sec = n * mult;
        if bits {
            bytes_per_sec /= 8;
        }
        let interval_us = match interval {
            None => 50_000,
            Some(i) => {
                let digits = i.bytes().take_while(u8::is_ascii_digit).count();
                let (num, unit) = i.split_at(digits);
                let n: u64 = num.parse().map_err(|_| "interval needs a number")?;
                let us = match unit {
                    "" | "s" => n.checked_mul(1_000_000),
                    "ms" => n.checked_mul(1_000),
                    "us" => Some(n),
                    _ => return Err("interval unit must be s, ms or us"),
                };
                match us.and_then(|v| u32::try_from(v).ok()) {
                    Some(v) if v > 0 => v,
                    _ => return Err("interval out of range"),
                }
            }
        };
        Ok(VifRate {
            bytes_per_sec,
            interval_us,
        })
    }
}

/// One NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifSpec {
    /// Line of the entry.
    pub line: u32,
    /// The entry as written (empty for a default NIC).
    pub spec: String,
    /// Device id: the index in the list unless `devid=` says otherwise.
    pub devid: u32,
    /// Guest MAC; `None` means generate one (00:16:3e:xx:xx:xx) at create time.
    pub mac: Option<MacAddr>,
    /// Bridge to join (xl's default is `xenbr0`).
    pub bridge: Option<String>,
    /// Hotplug script.
    pub script: Option<String>,
    /// IP addresses (space separated in the config).
    pub ip: Vec<IpAddr>,
    /// Backend interface name.
    pub vifname: Option<String>,
    /// `gatewaydev` (or xl's deprecated `netdev`).
    pub gatewaydev: Option<String>,
    /// Rate limit.
    pub rate: Option<VifRate>,
    /// MTU.
    pub mtu: Option<u32>,
    /// `model=` (HVM emulated NICs only; kept for display).
    pub model: Option<String>,
    /// `vlan=` as written.
    pub vlan: Option<String>,
    /// `trusted` / `untrusted`.
    pub trusted: Option<bool>,
    /// Notes about items accepted but without effect (model, type=ioemu, ...).
    pub notes: Vec<String>,
}

impl VifSpec {
    /// A NIC with default settings.
    pub fn default_nic(line: u32, devid: u32) -> VifSpec {
        VifSpec {
            line,
            spec: String::new(),
            devid,
            mac: None,
            bridge: None,
            script: None,
            ip: Vec::new(),
            vifname: None,
            gatewaydev: None,
            rate: None,
            mtu: None,
            model: None,
            vlan: None,
            trusted: None,
            notes: Vec::new(),
        }
    }
}

type VifErr = (ErrorKind, String);

fn ifname(item: &str, v: &str) -> Result<String, VifErr> {
    // Linux IFNAMSIZ is 16 including the NUL.
    if v.is_empty() || v.len() > 15 || v.bytes().any(|c| c == b'/' || c <= b' ' || c >= 0x7f) {
        return Err((
            ErrorKind::BadVif(
                "interface names are 1 to 15 characters without `/` or blanks".into(),
            ),
            item.to_owned(),
        ));
    }
    Ok(v.to_owned())
}

/// Parses one vif entry.
pub(crate) fn parse(spec: &str, line: u32, devid: u32) -> Result<VifSpec, VifErr> {
    let mut nic = VifSpec::default_nic(line, devid);
    nic.spec = spec.to_owned();
    for raw in spec.split(',') {
        let item = raw.trim();
        if item.is_empty() {
            continue;
        }
        let bad = |m: &str| (ErrorKind::BadVif(m.to_owned()), item.to_owned());
        let (key, val) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => match item {
                "trusted" => {
                    nic.trusted = Some(true);
                    continue;
                }
                "untrusted" => {
                    nic.trusted = Some(false);
                    continue;
                }
                _ => return Err(bad("expected key=value")),
            },
        };
        match key {
            "mac" => {
                nic.mac =
                    Some(MacAddr::parse(val).map_err(|m| (ErrorKind::BadMac(m), item.to_owned()))?)
            }
            "bridge" => nic.bridge = Some(ifname(item, val)?),
            "vifname" => nic.vifname = Some(ifname(item, val)?),
            "gatewaydev" | "netdev" => nic.gatewaydev = Some(ifname(item, val)?),
            "script" => {
                if val.is_empty() {
                    return Err(bad("empty script"));
                }
                nic.script = Some(val.to_owned());
            }
            "ip" => {
                let mut ips = Vec::new();
                for a in val.split_whitespace() {
                    ips.push(
                        a.parse::<IpAddr>()
                            .map_err(|_| bad("ip must be IP addresses separated by spaces"))?,
                    );
                }
                if ips.is_empty() {
                    return Err(bad("empty ip"));
                }
                nic.ip = ips;
            }
            "rate" => nic.rate = Some(VifRate::parse(val).map_err(bad)?),
            "mtu" => match super::syntax::strtol(val) {
                Some(m @ 68..=65535) => nic.mtu = Some(m as u32),
                _ => return Err(bad("mtu must be a number from 68 to 65535")),
            },
            "devid" => match super::syntax::strtol(val).and_then(|d| u32::try_from(d).ok()) {
                Some(d) => nic.devid = d,
                None => return Err(bad("devid must be a non-negative number")),
            },
            "type" => match val {
                "vif" => {}
                "ioemu" => nic.notes.push(
                    "type=ioemu (an emulated NIC) has no effect: shim-hv gives PV vifs only".into(),
                ),
                _ => return Err(bad("type must be vif or ioemu")),
            },
            "model" => {
                nic.notes.push(format!(
                    "model={val} is for HVM emulated NICs and has no effect"
                ));
                nic.model = Some(val.to_owned());
            }
            "vlan" => nic.vlan = Some(val.to_owned()),
            "backend" => match val {
                "0" | "Domain-0" | "dom0" => {}
                _ => {
                    return Err((
                        ErrorKind::Unsupported("network backends in driver domains".into()),
                        item.to_owned(),
                    ))
                }
            },
            "accel" | "policy" | "label" => nic.notes.push(format!("xm's `{key}` has no effect")),
            k if k.starts_with("colo_") || k == "forwarddev" => nic
                .notes
                .push(format!("COLO setting `{key}` has no effect")),
            _ => return Err(bad("unknown vif parameter")),
        }
    }
    Ok(nic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            MacAddr::parse("00:16:3E:74:3d:76").unwrap().to_string(),
            "00:16:3e:74:3d:76"
        );
        assert_eq!(
            MacAddr::parse("aa:00:00:50:02:f0").unwrap().0,
            [0xaa, 0, 0, 0x50, 2, 0xf0]
        );
        for bad in [
            "",
            "00:16:3e:74:3d",
            "00:16:3e:74:3d:76:00",
            "0:16:3e:74:3d:76",
            "00-16-3e-74-3d-76",
            "00:16:3e:74:3d:7g",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
            "00:16:3e:74:3d:+7",
        ] {
            assert!(MacAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_as_xl() {
        assert_eq!(
            VifRate::parse("10Mb/s").unwrap(),
            VifRate {
                bytes_per_sec: 1_250_000,
                interval_us: 50_000
            }
        );
        assert_eq!(VifRate::parse("250KB/s").unwrap().bytes_per_sec, 250_000);
        assert_eq!(VifRate::parse("1MB/s@20ms").unwrap().interval_us, 20_000);
        assert_eq!(VifRate::parse("1MB/s@2").unwrap().interval_us, 2_000_000);
        for bad in [
            "",
            "10",
            "10Mb",
            "0MB/s",
            "1TB/s",
            "1MB/s@",
            "1MB/s@0ms",
            "1MB/s@5000s",
            "1MB/s@3h",
        ] {
            assert!(VifRate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entries() {
        let v = parse("mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0", 3, 0).unwrap();
        assert_eq!(v.mac.unwrap().to_string(), "00:16:3e:74:3d:76");
        assert_eq!(v.bridge.as_deref(), Some("xenbr0"));
        assert_eq!(v.notes.len(), 1);
        let v = parse(" ip=10.0.0.2 fe80::1 , script=vif-route, vifname=guest0, rate=1MB/s, mtu=9000, devid=4, trusted", 1, 0).unwrap();
        assert_eq!(v.ip.len(), 2);
        assert_eq!((v.devid, v.mtu, v.trusted), (4, Some(9000), Some(true)));
        let v = parse("", 1, 2).unwrap();
        assert_eq!(v, VifSpec::default_nic(1, 2));
        for (s, text) in [
            ("mac=01:00:5e:00:00:01", "mac=01:00:5e:00:00:01"),
            ("bridge=br0,color=red", "color=red"),
            ("bridge", "bridge"),
            ("ip=10.0.0.300", "ip=10.0.0.300"),
            ("type=tap", "type=tap"),
            ("mtu=20", "mtu=20"),
            ("vifname=a/b", "vifname=a/b"),
            (
                "bridge=averyveryverylongname",
                "bridge=averyveryverylongname",
            ),
            ("backend=netdom", "backend=netdom"),
            ("rate=fast", "rate=fast"),
        ] {
            let e = parse(s, 1, 0).unwrap_err();
            assert_eq!(e.1, text, "{s}");
        }
    }
}
