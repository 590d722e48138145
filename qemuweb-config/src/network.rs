//! The network model: virtual networks (a switch with the services a guest expects:
//! DHCP, DNS, a gateway), the NICs that attach VMs to them, and port forwards.
//!
//! A [`VirtualNetwork`] is the serialized, user-facing definition (strings for addresses,
//! so TypeScript writes the same objects); [`VirtualNetwork::plan`] checks it and resolves
//! every default into a [`NetworkPlan`] with parsed addresses, which the virtual switch
//! (`qemuweb-net`) and the native argument builder use. A VM joins networks through the
//! [`NetworkAttachment`]s of its profile ([`VmProfile::networks`](crate::VmProfile)) or of
//! its overrides ([`VmOverrides::networks`](crate::VmOverrides)).
//!
//! ```
//! use qemuweb_config::{network_by_id, NetworkMode};
//! let plan = network_by_id("default")?.plan()?;
//! assert_eq!(plan.mode, NetworkMode::Nat);
//! assert_eq!(plan.gateway.to_string(), "10.0.2.2");
//! assert_eq!(plan.dhcp.unwrap().start.to_string(), "10.0.2.15");
//! # Ok::<(), qemuweb_config::ConfigError>(())
//! ```

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use tsify::Tsify;

use crate::error::ConfigError;
use crate::types::ForwardProtocol;

/// Id of the built-in NAT network (QEMU user networking's addresses: 10.0.2.0/24, gateway
/// and host 10.0.2.2, DNS 10.0.2.3, DHCP from 10.0.2.15).
pub const DEFAULT_NETWORK: &str = "default";
/// Id of the built-in isolated network (192.168.100.0/24, no way out).
pub const ISOLATED_NETWORK: &str = "isolated";

/// The largest Ethernet frame a network carries by default: 1514 bytes (a 1500-byte MTU
/// and the 14-byte header, no frame check sequence).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1514;

/// How a network reaches beyond its VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The VMs, DHCP and DNS, and a gateway: traffic for other addresses leaves through the
    /// network's uplink (`qemuweb network` on the user's machine), when one is connected.
    #[default]
    Nat,
    /// The VMs, DHCP and DNS only: no gateway route and no uplink.
    Isolated,
}

/// The DHCP service of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct DhcpConfig {
    /// Whether the network answers DHCP (default `true`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The first address handed out; default: the tenth host of the network (`.10` of a
    /// `/24`), or the first host after the gateway and DNS addresses in smaller networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub range_start: Option<String>,
    /// The last address handed out; default: the last host of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub range_end: Option<String>,
    /// How long a lease lasts, in seconds (default 3600, at least 60).
    #[serde(default = "default_lease")]
    pub lease_seconds: u32,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            enabled: true,
            range_start: None,
            range_end: None,
            lease_seconds: default_lease(),
        }
    }
}

/// The DNS service of a network: it answers the names of the network's VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct DnsConfig {
    /// Whether the network answers DNS (default `true`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The DNS server's address; default: the gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub server: Option<String>,
    /// The domain of the VMs' names (`vm1` is also `vm1.DOMAIN`); default `qemuweb.internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub domain: Option<String>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            server: None,
            domain: None,
        }
    }
}

/// Bounds on what one port (one VM's NIC) may send into the network: frames beyond them
/// are dropped and counted, so one VM cannot starve the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase", default)]
pub struct PortLimits {
    /// The largest frame accepted, in bytes (60 to 9014; default 1514).
    pub max_frame_bytes: u32,
    /// Frames per second a port may send on average (default 20000).
    pub frames_per_second: u32,
    /// Bytes per second a port may send on average (default 64 MiB).
    pub bytes_per_second: u32,
    /// How many frames above the average a port may send at once (default 2048).
    pub burst_frames: u32,
    /// The most MAC addresses the switch learns behind one port (default 4).
    pub max_macs: u32,
}

impl Default for PortLimits {
    fn default() -> Self {
        PortLimits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            frames_per_second: 20_000,
            bytes_per_second: 64 << 20,
            burst_frames: 2048,
            max_macs: 4,
        }
    }
}

/// A host port forwarded to a VM's port by the network's uplink (`qemuweb network`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPortForward {
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: ForwardProtocol,
    /// The port on the host's 127.0.0.1.
    pub host_port: u16,
    /// The VM (its id, which is also its name in the network's DNS).
    pub vm: String,
    /// The port in the guest.
    pub guest_port: u16,
}

impl std::str::FromStr for NetworkPortForward {
    type Err = ConfigError;

    /// Parses `[tcp:|udp:]HOST_PORT:VM:GUEST_PORT`, e.g. `8080:vm1:80`.
    ///
    /// ```
    /// use qemuweb_config::NetworkPortForward;
    /// let f: NetworkPortForward = "8080:vm1:80".parse().unwrap();
    /// assert_eq!((f.host_port, f.vm.as_str(), f.guest_port), (8080, "vm1", 80));
    /// assert!("8080:80".parse::<NetworkPortForward>().is_err());
    /// assert!("8080:bad/name:80".parse::<NetworkPortForward>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::InvalidPortForward { text: s.into() };
        let (protocol, rest) = match s.strip_prefix("udp:") {
            Some(r) => (ForwardProtocol::Udp, r),
            None => (ForwardProtocol::Tcp, s.strip_prefix("tcp:").unwrap_or(s)),
        };
        let mut parts = rest.split(':');
        let (Some(h), Some(vm), Some(g), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let host_port: u16 = h.parse().map_err(|_| bad())?;
        let guest_port: u16 = g.parse().map_err(|_| bad())?;
        if host_port == 0 || guest_port == 0 || !valid_name(vm) {
            return Err(bad());
        }
        Ok(NetworkPortForward {
            protocol,
            host_port,
            vm: vm.to_string(),
            guest_port,
        })
    }
}

/// A virtual network: an Ethernet switch shared by the VMs attached to it, with DHCP, DNS
/// and (in [`NetworkMode::Nat`]) a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNetwork {
    /// The name VMs attach to: 1 to 64 ASCII letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// NAT (default) or isolated.
    #[serde(default)]
    pub mode: NetworkMode,
    /// The IPv4 network, e.g. `10.0.2.0/24` (a prefix from 8 to 29).
    pub cidr: String,
    /// The gateway's address (also the address of the network's services); default: the
    /// first host of the network (`.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub gateway: Option<String>,
    /// DHCP.
    #[serde(default)]
    pub dhcp: DhcpConfig,
    /// DNS.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Host ports forwarded to VMs through the uplink (NAT networks only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[tsify(optional)]
    pub port_forwards: Vec<NetworkPortForward>,
    /// Per-port bounds (defaults when absent).
    #[serde(default)]
    #[tsify(optional)]
    pub limits: PortLimits,
}

/// The NIC a guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "kebab-case")]
pub enum NicModel {
    /// Intel 82540EM (`e1000`): every x86 guest knows it; QEMU only.
    E1000,
    /// `virtio-net-pci`: the fastest for Linux guests; QEMU and v86.
    VirtioNet,
    /// NE2000 on PCI (`ne2k_pci`): for old guests; QEMU and v86.
    Ne2kPci,
}

impl NicModel {
    /// QEMU's device name: `e1000`, `virtio-net-pci` or `ne2k_pci`.
    ///
    /// ```
    /// assert_eq!(qemuweb_config::NicModel::VirtioNet.qemu_device(), "virtio-net-pci");
    /// ```
    pub fn qemu_device(self) -> &'static str {
        match self {
            NicModel::E1000 => "e1000",
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::Ne2kPci => "ne2k_pci",
        }
    }

    /// The model QEMU gives a NIC whose attachment names none: `e1000` for the 32-bit PC
    /// (the NIC old and small guests know), `virtio-net` elsewhere.
    ///
    /// ```
    /// use qemuweb_config::{Arch, NicModel};
    /// assert_eq!(NicModel::qemu_default(Arch::I386), NicModel::E1000);
    /// assert_eq!(NicModel::qemu_default(Arch::Aarch64), NicModel::VirtioNet);
    /// ```
    pub fn qemu_default(arch: crate::Arch) -> NicModel {
        if arch == crate::Arch::I386 {
            NicModel::E1000
        } else {
            NicModel::VirtioNet
        }
    }
}

/// One NIC of a VM, on a named network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachment {
    /// The network's id.
    pub network: String,
    /// The NIC's MAC address (`52:54:00:12:34:56`); default: one derived from the VM's id
    /// and the NIC's index (the same on every run), where the engine can set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub mac: Option<String>,
    /// The NIC model; default: the engine's choice (`virtio-net` on v86, `e1000` for i386
    /// and `virtio-net` for other guests on QEMU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub model: Option<NicModel>,
    /// An address the network's DHCP always gives this VM (inside the network, not the
    /// gateway's or the DNS server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub ip: Option<String>,
}

impl NetworkAttachment {
    /// A NIC on `network` with every default.
    ///
    /// ```
    /// let a = qemuweb_config::NetworkAttachment::on("default");
    /// assert_eq!(a.network, "default");
    /// assert!(a.mac.is_none() && a.model.is_none() && a.ip.is_none());
    /// ```
    pub fn on(network: impl Into<String>) -> Self {
        NetworkAttachment {
            network: network.into(),
            mac: None,
            model: None,
            ip: None,
        }
    }
}

/// The DHCP pool of a [`NetworkPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpPlan {
    /// The first address handed out.
    pub start: Ipv4Addr,
    /// The last address handed out.
    pub end: Ipv4Addr,
    /// Lease time in seconds.
    pub lease_seconds: u32,
}

/// A checked [`VirtualNetwork`] with every default resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// The network's id.
    pub id: String,
    /// NAT or isolated.
    pub mode: NetworkMode,
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
    /// The gateway's (and the services') address.
    pub gateway: Ipv4Addr,
    /// The DNS server's address, if DNS is on.
    pub dns: Option<Ipv4Addr>,
    /// The DHCP pool, if DHCP is on (the gateway's and DNS server's addresses are never
    /// handed out, even inside it).
    pub dhcp: Option<DhcpPlan>,
    /// The domain of the VMs' names.
    pub domain: String,
    /// Port forwards.
    pub port_forwards: Vec<NetworkPortForward>,
    /// Per-port bounds.
    pub limits: PortLimits,
}

impl NetworkPlan {
    /// The subnet mask, e.g. `255.255.255.0`.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    /// The broadcast address, e.g. `10.0.2.255`.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// Whether `addr` is in this network (network and broadcast addresses included).
    ///
    /// ```
    /// let plan = qemuweb_config::network_by_id("default")?.plan()?;
    /// assert!(plan.contains("10.0.2.200".parse().unwrap()));
    /// assert!(!plan.contains("10.0.3.1".parse().unwrap()));
    /// # Ok::<(), qemuweb_config::ConfigError>(())
    /// ```
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether `addr` is a host address of this network (not the network or broadcast
    /// address).
    pub fn is_host(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr) && addr != self.network && addr != self.broadcast()
    }

    /// The CIDR text, e.g. `10.0.2.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }
}

fn yes() -> bool {
    true
}

fn default_lease() -> u32 {
    3600
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Whether `name` is a valid network or VM name: 1 to 64 ASCII letters, digits, `-`, `_`,
/// `.`, not starting with `.` (the rule of VM ids).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses `a.b.c.d/n`.
///
/// ```
/// use std::net::Ipv4Addr;
/// assert_eq!(qemuweb_config::parse_cidr("10.0.2.0/24").unwrap(), (Ipv4Addr::new(10, 0, 2, 0), 24));
/// assert!(qemuweb_config::parse_cidr("10.0.2.0").is_none());
/// assert!(qemuweb_config::parse_cidr("10.0.2.0/33").is_none());
/// ```
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((addr, prefix))
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff` (or with `-`).
///
/// ```
/// assert_eq!(qemuweb_config::parse_mac("52:54:00:12:34:56"), Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
/// assert_eq!(qemuweb_config::parse_mac("52:54:00:12:34"), None);
/// ```
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MAC address of NIC `index` of VM `vm_id` when none is given: locally administered,
/// unicast (`52:54:00` like QEMU's, then three bytes of a hash of the id and index), the
/// same on every run.
///
/// ```
/// let a = qemuweb_config::default_mac("vm1", 0);
/// assert_eq!(&a[..3], &[0x52, 0x54, 0x00]);
/// assert_eq!(a, qemuweb_config::default_mac("vm1", 0));
/// assert_ne!(a, qemuweb_config::default_mac("vm2", 0));
/// ```
pub fn default_mac(vm_id: &str, index: u32) -> [u8; 6] {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u32 = 0x811c_9dc5;
    for b in vm_id.bytes().chain(index.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let [a, b, c, _] = h.to_be_bytes();
    [0x52, 0x54, 0x00, a, b, c]
}

/// The NICs a VM has on named networks, as the argument builder resolves them: the
/// overrides' `networks` if given, else the profile's; none when the overrides turn
/// networking off (`net: "none"`).
///
/// ```
/// use qemuweb_config::{effective_networks, profile_by_id, NetMode, NetworkAttachment, VmOverrides};
/// let profile = profile_by_id("linux-i386-pc-nographic").unwrap();
/// assert!(effective_networks(&profile, None).is_empty());
/// let mut ov = VmOverrides { networks: Some(vec![NetworkAttachment::on("default")]), ..VmOverrides::default() };
/// assert_eq!(effective_networks(&profile, Some(&ov))[0].network, "default");
/// ov.net = Some(NetMode::None);
/// assert!(effective_networks(&profile, Some(&ov)).is_empty());
/// ```
pub fn effective_networks(
    profile: &crate::VmProfile,
    overrides: Option<&crate::VmOverrides>,
) -> Vec<NetworkAttachment> {
    match overrides {
        Some(ov) if ov.net == Some(crate::NetMode::None) => Vec::new(),
        Some(crate::VmOverrides {
            networks: Some(n), ..
        }) => n.clone(),
        _ => profile.networks.clone(),
    }
}

/// Formats a MAC address as `52:54:00:12:34:56`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl VirtualNetwork {
    /// A NAT network `id` on `cidr` with every default.
    ///
    /// ```
    /// let plan = qemuweb_config::VirtualNetwork::nat("lan", "192.168.7.0/24").plan()?;
    /// assert_eq!(plan.gateway.to_string(), "192.168.7.1");
    /// assert_eq!(plan.dhcp.unwrap().start.to_string(), "192.168.7.10");
    /// # Ok::<(), qemuweb_config::ConfigError>(())
    /// ```
    pub fn nat(id: impl Into<String>, cidr: impl Into<String>) -> Self {
        VirtualNetwork {
            id: id.into(),
            mode: NetworkMode::Nat,
            cidr: cidr.into(),
            gateway: None,
            dhcp: DhcpConfig::default(),
            dns: DnsConfig::default(),
            port_forwards: Vec::new(),
            limits: PortLimits::default(),
        }
    }

    /// Parses a network from JSON (the TypeScript shape).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Json`](crate::ErrorKind::Json) for JSON of another shape.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|source| ConfigError::Json {
            what: "network",
            source,
        })
    }

    /// Checks the network and resolves its defaults.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidNetwork`](crate::ErrorKind::InvalidNetwork) naming what is
    /// wrong: a bad id or CIDR (prefix outside 8-29), an address outside the network or on
    /// its network/broadcast address, an empty DHCP range, a short lease, bad limits, or port forwards that are malformed, repeat a
    /// host port, or belong to an isolated network.
    pub fn plan(&self) -> Result<NetworkPlan, ConfigError> {
        let bad = |reason: String| ConfigError::InvalidNetwork {
            id: self.id.clone(),
            reason,
        };
        if !valid_name(&self.id) {
            return Err(bad(
                "the id must be 1 to 64 ASCII letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let (addr, prefix) = parse_cidr(&self.cidr)
            .ok_or_else(|| bad(format!("cidr '{}' is not a.b.c.d/n", self.cidr)))?;
        if !(8..=29).contains(&prefix) {
            return Err(bad(format!(
                "cidr '{}': the prefix must be from 8 to 29",
                self.cidr
            )));
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        let mut plan = NetworkPlan {
            id: self.id.clone(),
            mode: self.mode,
            network,
            prefix,
            gateway: Ipv4Addr::from(u32::from(network) + 1),
            dns: None,
            dhcp: None,
            domain: self
                .dns
                .domain
                .clone()
                .unwrap_or_else(|| "qemuweb.internal".into()),
            port_forwards: self.port_forwards.clone(),
            limits: self.limits,
        };
        let shape = plan.clone();
        let host = |what: &str, text: &str| -> Result<Ipv4Addr, ConfigError> {
            let a: Ipv4Addr = text
                .parse()
                .map_err(|_| bad(format!("{what} '{text}' is not an IPv4 address")))?;
            if !shape.is_host(a) {
                return Err(bad(format!(
                    "{what} {a} is not a host address of {}",
                    shape.cidr()
                )));
            }
            Ok(a)
        };
        if let Some(g) = &self.gateway {
            plan.gateway = host("gateway", g)?;
        }
        if self.dns.enabled {
            plan.dns = Some(match &self.dns.server {
                Some(s) => host("dns server", s)?,
                None => plan.gateway,
            });
        }
        let domain_ok = !plan.domain.is_empty()
            && plan.domain.len() <= 200
            && plan.domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain_ok {
            return Err(bad(format!(
                "dns domain '{}' is not a domain name",
                plan.domain
            )));
        }
        if self.dhcp.enabled {
            let reserved = [Some(plan.gateway), plan.dns];
            let last = Ipv4Addr::from(u32::from(plan.broadcast()) - 1);
            let start = match &self.dhcp.range_start {
                Some(s) => host("dhcp rangeStart", s)?,
                None => {
                    let tenth = u32::from(network) + 10;
                    let after = reserved
                        .iter()
                        .flatten()
                        .map(|a| u32::from(*a) + 1)
                        .max()
                        .unwrap_or(0);
                    let first = if tenth < u32::from(last) {
                        tenth
                    } else {
                        after
                    };
                    Ipv4Addr::from(first.min(u32::from(last)))
                }
            };
            let end = match &self.dhcp.range_end {
                Some(s) => host("dhcp rangeEnd", s)?,
                None => last,
            };
            if u32::from(start) > u32::from(end) {
                return Err(bad(format!("the dhcp range {start}-{end} is empty")));
            }
            if self.dhcp.lease_seconds < 60 {
                return Err(bad("dhcp leaseSeconds must be at least 60".into()));
            }
            plan.dhcp = Some(DhcpPlan {
                start,
                end,
                lease_seconds: self.dhcp.lease_seconds,
            });
        }
        let l = &self.limits;
        if !(60..=9014).contains(&l.max_frame_bytes)
            || l.frames_per_second == 0
            || l.bytes_per_second == 0
            || l.burst_frames == 0
            || l.max_macs == 0
        {
            return Err(bad(
                "limits: maxFrameBytes must be 60 to 9014 and the other limits above 0".into(),
            ));
        }
        for (i, f) in self.port_forwards.iter().enumerate() {
            if self.mode == NetworkMode::Isolated {
                return Err(bad("an isolated network has no port forwards".into()));
            }
            if f.host_port == 0 || f.guest_port == 0 || !valid_name(&f.vm) {
                return Err(bad(format!(
                    "port forward {}:{}:{}: ports must be 1 to 65535 and the VM a VM id",
                    f.host_port, f.vm, f.guest_port
                )));
            }
            let twice = self.port_forwards[..i]
                .iter()
                .any(|o| o.protocol == f.protocol && o.host_port == f.host_port);
            if twice {
                return Err(bad(format!("host port {} is forwarded twice", f.host_port)));
            }
        }
        Ok(plan)
    }
}

impl NetworkAttachment {
    /// Checks the attachment against its network's plan: a well-formed MAC (unicast), a
    /// reserved address that is a host of the network and not a service address.
    ///
    /// ```
    /// use qemuweb_config::{network_by_id, NetworkAttachment};
    /// let plan = network_by_id("default")?.plan()?;
    /// let mut a = NetworkAttachment::on("default");
    /// a.ip = Some("10.0.2.50".into());
    /// assert!(a.check(&plan).is_ok());
    /// a.ip = Some("10.0.2.2".into()); // the gateway
    /// assert!(a.check(&plan).is_err());
    /// # Ok::<(), qemuweb_config::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidNetwork`](crate::ErrorKind::InvalidNetwork).
    pub fn check(&self, plan: &NetworkPlan) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::InvalidNetwork {
            id: plan.id.clone(),
            reason,
        };
        if let Some(mac) = &self.mac {
            let m = parse_mac(mac).ok_or_else(|| bad(format!("mac '{mac}' is malformed")))?;
            if m[0] & 1 != 0 || m == [0; 6] {
                return Err(bad(format!("mac {mac} is not a unicast address")));
            }
        }
        if let Some(ip) = &self.ip {
            let a: Ipv4Addr = ip
                .parse()
                .map_err(|_| bad(format!("ip '{ip}' is not an IPv4 address")))?;
            if !plan.is_host(a) || a == plan.gateway || Some(a) == plan.dns {
                return Err(bad(format!(
                    "ip {a} is not a free host address of {}",
                    plan.cidr()
                )));
            }
        }
        Ok(())
    }
}

/// The built-in networks: `default` (NAT, QEMU user networking's addresses) and
/// `isolated` (192.168.100.0/24, no way out).
///
/// ```
/// let ids: Vec<String> = qemuweb_config::default_networks().into_iter().map(|n| n.id).collect();
/// assert_eq!(ids, ["default", "isolated"]);
/// ```
pub fn default_networks() -> Vec<VirtualNetwork> {
    let mut default = VirtualNetwork::nat(DEFAULT_NETWORK, "10.0.2.0/24");
    default.gateway = Some("10.0.2.2".into());
    default.dns.server = Some("10.0.2.3".into());
    default.dhcp.range_start = Some("10.0.2.15".into());
    let mut isolated = VirtualNetwork::nat(ISOLATED_NETWORK, "192.168.100.0/24");
    isolated.mode = NetworkMode::Isolated;
    vec![default, isolated]
}

/// The built-in network `id`.
///
/// # Errors
///
/// [`ErrorKind::UnknownNetwork`](crate::ErrorKind::UnknownNetwork).
pub fn network_by_id(id: &str) -> Result<VirtualNetwork, ConfigError> {
    default_networks()
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| ConfigError::UnknownNetwork { id: id.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_networks_plan() {
        for n in default_networks() {
            let plan = n.plan().unwrap();
            let dhcp = plan.dhcp.unwrap();
            assert!(plan.is_host(dhcp.start) && plan.is_host(dhcp.end));
        }
        let d = network_by_id("default").unwrap().plan().unwrap();
        assert_eq!(d.dns, Some(Ipv4Addr::new(10, 0, 2, 3)));
        assert_eq!(d.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(d.broadcast(), Ipv4Addr::new(10, 0, 2, 255));
        assert_eq!(d.dhcp.unwrap().end, Ipv4Addr::new(10, 0, 2, 254));
        let i = network_by_id("isolated").unwrap().plan().unwrap();
        assert_eq!(i.mode, NetworkMode::Isolated);
        assert_eq!(i.gateway, Ipv4Addr::new(192, 168, 100, 1));
        assert_eq!(i.dns, Some(i.gateway));
        assert_eq!(
            network_by_id("nope").unwrap_err().kind(),
            crate::ErrorKind::UnknownNetwork
        );
    }

    #[test]
    fn small_networks_place_the_pool_after_the_services() {
        let plan = VirtualNetwork::nat("small", "10.9.0.8/29").plan().unwrap();
        assert_eq!(plan.network, Ipv4Addr::new(10, 9, 0, 8));
        assert_eq!(plan.gateway, Ipv4Addr::new(10, 9, 0, 9));
        let dhcp = plan.dhcp.unwrap();
        assert_eq!(
            (dhcp.start, dhcp.end),
            (Ipv4Addr::new(10, 9, 0, 10), Ipv4Addr::new(10, 9, 0, 14))
        );
    }

    #[test]
    fn bad_networks_are_refused_with_a_reason() {
        let base = VirtualNetwork::nat("n", "10.1.0.0/24");
        type Change = Box<dyn Fn(&mut VirtualNetwork)>;
        let cases: Vec<(&str, Change)> = vec![
            ("id", Box::new(|n| n.id = "a/b".into())),
            ("cidr", Box::new(|n| n.cidr = "10.1.0.0".into())),
            ("prefix", Box::new(|n| n.cidr = "10.1.0.0/31".into())),
            ("prefix", Box::new(|n| n.cidr = "10.0.0.0/7".into())),
            ("gateway", Box::new(|n| n.gateway = Some("10.2.0.1".into()))),
            (
                "gateway",
                Box::new(|n| n.gateway = Some("10.1.0.255".into())),
            ),
            ("dns server", Box::new(|n| n.dns.server = Some("x".into()))),
            (
                "empty",
                Box::new(|n| {
                    n.dhcp.range_start = Some("10.1.0.100".into());
                    n.dhcp.range_end = Some("10.1.0.50".into());
                }),
            ),
            ("lease", Box::new(|n| n.dhcp.lease_seconds = 5)),
            (
                "domain",
                Box::new(|n| n.dns.domain = Some("bad domain".into())),
            ),
            ("limits", Box::new(|n| n.limits.max_frame_bytes = 20)),
            (
                "twice",
                Box::new(|n| {
                    let f: NetworkPortForward = "80:vm1:80".parse().unwrap();
                    n.port_forwards = vec![f.clone(), f];
                }),
            ),
            (
                "isolated",
                Box::new(|n| {
                    n.mode = NetworkMode::Isolated;
                    n.port_forwards = vec!["80:vm1:80".parse().unwrap()];
                }),
            ),
        ];
        for (word, change) in cases {
            let mut n = base.clone();
            change(&mut n);
            let err = n.plan().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidNetwork, "{word}");
            assert!(err.to_string().contains(word), "{word}: {err}");
        }
    }

    #[test]
    fn networks_round_trip_through_json() {
        let json = r#"{"id":"lan","cidr":"172.20.0.0/16","dhcp":{"rangeStart":"172.20.1.0"},
            "portForwards":[{"hostPort":8080,"vm":"web","guestPort":80}]}"#;
        let n = VirtualNetwork::from_json(json).unwrap();
        assert_eq!(n.mode, NetworkMode::Nat);
        assert!(n.dhcp.enabled && n.dns.enabled);
        assert_eq!(n.port_forwards[0].protocol, ForwardProtocol::Tcp);
        let back: VirtualNetwork =
            serde_json::from_value(serde_json::to_value(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        let plan = n.plan().unwrap();
        assert_eq!(plan.dhcp.unwrap().end, Ipv4Addr::new(172, 20, 255, 254));
        assert!(VirtualNetwork::from_json("{\"id\":1}").is_err());
    }

    #[test]
    fn attachments_are_checked() {
        let plan = network_by_id("default").unwrap().plan().unwrap();
        let mut a = NetworkAttachment::on("default");
        a.mac = Some("53:54:00:00:00:01".into()); // multicast bit
        assert!(a.check(&plan).is_err());
        a.mac = Some("52:54:00:00:00:01".into());
        assert!(a.check(&plan).is_ok());
        a.ip = Some("10.0.2.255".into());
        assert!(a.check(&plan).is_err());
        let json = serde_json::to_value(NetworkAttachment {
            model: Some(NicModel::Ne2kPci),
            ..NetworkAttachment::on("x")
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"network": "x", "model": "ne2k-pci"})
        );
        assert_eq!(format_mac(default_mac("a", 1)).len(), 17);
    }
}
