//! Swaptacular's rules, as far as identity and trust go: the three node types,
//! their subject DNs and node-id rules (swpt_stomp's `swpt-certificates.rst`),
//! the `Subnet:` comment an accounting authority puts in the peer
//! certificates it issues, the STOMP servers manifest (`stomp.toml`, from
//! `swpt-stomp.rst`), and the file names of a node directory made by
//! swpt_ca_scripts.
//!
//! Both sides need them: `ca-tool` issues and checks Swaptacular certificates
//! and info-bundles, and the gateway reads a Swaptacular node directory as its
//! trust and the partners' manifests to reach their STOMP servers. Keeping the
//! rules in one place means the two can never disagree on who is a valid
//! Swaptacular peer.

use serde::Deserialize;

use crate::endpoint::check_endpoint;
use crate::identity::{node_id_from_spki, NodeIdentity};

/// The `O` of every Swaptacular node's subject.
pub const ORG: &str = "Swaptacular Nodes Registry";

/// Swaptacular's register-peer refuses a peer certificate that ends less than
/// this many years after the current year.
pub const MIN_PEER_CERT_YEARS: i32 = 500;

/// Validity (days) swpt_ca_scripts gives roots and peer certificates
/// (`default_days = 365000` in its `root-ca.conf.template`): about 1000 years.
pub const DEFAULT_DAYS: u32 = 365_000;

/// Largest validity (days) the Swaptacular profile accepts: 3000 years, so a
/// root made today still ends before year 9999, which X.509 times can express.
pub const MAX_DAYS: u32 = 365 * 3000;

/// The `nsComment` extension (Netscape certificate comment, 2.16.840.1.113730.1.13).
pub const OID_NS_COMMENT: &[u64] = &[2, 16, 840, 1, 113_730, 1, 13];

/// Largest `stomp.toml` read (the manifests are a few lines).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// File names of a node directory made by swpt_ca_scripts (the ones the
/// project reads; the scripts keep more under `db/`).
pub mod layout {
    /// Our root certificate (the same name as in a ca-tool directory).
    pub const ROOT_CERT: &str = "root-ca.crt";
    /// The root key, encrypted by `openssl genrsa -aes128`.
    pub const ROOT_KEY: &str = "private/root-ca.key";
    /// Our node id, one line.
    pub const NODE_ID: &str = "db/nodeid";
    /// Our node type (`Accounting Authorities`, ...), one line.
    pub const NODE_TYPE: &str = "db/nodetype";
    /// openssl ca's index of every certificate issued.
    pub const INDEX: &str = "db/index";
    /// openssl ca's copies of the certificates issued, `<SERIAL>.pem`.
    pub const CERTS_DIR: &str = "certs";
    /// Our own node info (holds `stomp.toml`).
    pub const NODEINFO_DIR: &str = "nodeinfo";
    /// Partners, one directory each, named by node id.
    pub const PEERS_DIR: &str = "peers";
    /// A partner's root certificate.
    pub const PEER_ROOT: &str = "root-ca.crt";
    /// The certificate the partner issued us (presented when we dial it).
    pub const SUB_CA: &str = "sub-ca.crt";
    /// The certificate we issued the partner.
    pub const PEERCERT: &str = "peercert.crt";
    /// Present once everything the partner needs has been set up (swpt_stomp
    /// treats a partner without it as inactive).
    pub const ACTIVE: &str = "ACTIVE";
    /// Present (holding a date) once the partner was deactivated, for good.
    pub const DEACTIVATED: &str = "DEACTIVATED";
    /// The partner's manifest of STOMP servers, inside its node info.
    pub const PEER_STOMP: &str = "nodeinfo/stomp.toml";
    /// The partner's node type, one line.
    pub const PEER_NODE_TYPE: &str = "nodetype.txt";
    /// On an accounting authority: the subnet it gave the partner.
    pub const PEER_SUBNET: &str = "subnet.txt";
    /// The name of a manifest file.
    pub const STOMP_TOML: &str = "stomp.toml";
}

/// Why something breaks Swaptacular's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwaptacularError {
    /// The subject is not `O=Swaptacular Nodes Registry, OU=<node type>, serialNumber=<id>`.
    #[error("{subject} is not a Swaptacular node's name: {reason}")]
    NotSwaptacular {
        /// The subject as text.
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// A node id that breaks its node type's rule.
    #[error("invalid Swaptacular node id {id:?} for {node_type}: {rule}")]
    BadNodeId {
        /// The id.
        id: String,
        /// The node type (its OU).
        node_type: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// A subnet that breaks the spec.
    #[error("invalid subnet {0:?}: {1}")]
    BadSubnet(String, String),
    /// A `stomp.toml` that swpt_stomp would refuse.
    #[error("invalid stomp.toml: {0}")]
    BadManifest(String),
}

/// The three kinds of Swaptacular node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    /// Manages a range of debtor ids; its id is an 8-hex-digit prefix.
    AccountingAuthority,
    /// Serves creditors; its id is derived from its root key.
    CreditorsAgent,
    /// Serves debtors; its id is derived from its root key.
    DebtorsAgent,
}

impl NodeType {
    /// Every node type.
    pub const ALL: [NodeType; 3] = [
        NodeType::AccountingAuthority,
        NodeType::CreditorsAgent,
        NodeType::DebtorsAgent,
    ];

    /// The `OU` of the node's subject (and the content of `db/nodetype`).
    pub fn unit(self) -> &'static str {
        match self {
            NodeType::AccountingAuthority => "Accounting Authorities",
            NodeType::CreditorsAgent => "Creditors Agents",
            NodeType::DebtorsAgent => "Debtors Agents",
        }
    }

    /// The command-line name (`--node-type`).
    pub fn cli_name(self) -> &'static str {
        match self {
            NodeType::AccountingAuthority => "accounting-authority",
            NodeType::CreditorsAgent => "creditors-agent",
            NodeType::DebtorsAgent => "debtors-agent",
        }
    }

    /// The node type whose `OU` is `unit`.
    pub fn from_unit(unit: &str) -> Option<NodeType> {
        NodeType::ALL.into_iter().find(|t| t.unit() == unit)
    }

    /// The STOMP destination swpt_ca_scripts' `init-ca` writes into a node's
    /// own `stomp.toml` (the exchange its servers publish into).
    pub fn default_destination(self) -> &'static str {
        match self {
            NodeType::AccountingAuthority => "/exchange/accounts_in",
            NodeType::CreditorsAgent => "/exchange/creditors_in",
            NodeType::DebtorsAgent => "/exchange/debtors_in",
        }
    }

    /// Whether nodes of these two types may be peers: an accounting authority
    /// with agents, agents only with accounting authorities (swpt_ca_scripts'
    /// sign-peercert and register-peer refuse every other pair).
    pub fn may_peer_with(self, other: NodeType) -> bool {
        (self == NodeType::AccountingAuthority) != (other == NodeType::AccountingAuthority)
    }

    /// Checks `id` against this type's rule: exactly 8 lowercase hex digits for an
    /// accounting authority (its debtor-id prefix), and for agents the 32 hex
    /// digits derived from the root key (`spki_der`), which makes the id
    /// self-certifying.
    pub fn check_node_id(self, id: &str, spki_der: &[u8]) -> Result<(), SwaptacularError> {
        let bad = |rule: String| SwaptacularError::BadNodeId {
            id: id.to_string(),
            node_type: self.unit(),
            rule,
        };
        match self {
            NodeType::AccountingAuthority => {
                if !is_lower_hex(id, 8, 8) {
                    return Err(bad(
                        "an accounting authority's id is exactly 8 lowercase hex digits \
                         (its debtor-id prefix)"
                            .into(),
                    ));
                }
            }
            NodeType::CreditorsAgent | NodeType::DebtorsAgent => {
                let derived = node_id_from_spki(spki_der);
                if id != derived {
                    return Err(bad(format!(
                        "an agent's id is the 32 lowercase hex digits derived from its root key, \
                         here {derived}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The node type of a root whose identity has the Swaptacular shape and
    /// follows its node-id rule.
    pub fn of_identity(identity: &NodeIdentity) -> Result<NodeType, SwaptacularError> {
        let name = parse_subject(&identity.subject_der).map_err(|reason| {
            SwaptacularError::NotSwaptacular {
                subject: identity.subject.clone(),
                reason,
            }
        })?;
        let node_type = NodeType::from_unit(&name.unit).ok_or_else(|| {
            SwaptacularError::NotSwaptacular {
                subject: identity.subject.clone(),
                reason: format!(
                    "OU {:?} is none of \"Accounting Authorities\", \"Creditors Agents\", \"Debtors Agents\"",
                    name.unit
                ),
            }
        })?;
        node_type.check_node_id(&identity.node_id, &identity.spki_der)?;
        Ok(node_type)
    }
}

impl std::fmt::Display for NodeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.unit())
    }
}

/// A Swaptacular subject's three attributes, as text.
struct SwptName {
    unit: String,
}

/// Reads `O, OU, serialNumber` (in this order, nothing else) from a subject DER;
/// `Err` says what is wrong.
fn parse_subject(subject_der: &[u8]) -> Result<SwptName, String> {
    use x509_parser::oid_registry::{
        OID_X509_ORGANIZATIONAL_UNIT, OID_X509_ORGANIZATION_NAME, OID_X509_SERIALNUMBER,
    };
    use x509_parser::prelude::FromDer;
    let (_, name) = x509_parser::x509::X509Name::from_der(subject_der)
        .map_err(|e| format!("unparsable ({e})"))?;
    let attrs: Vec<_> = name.iter_attributes().collect();
    let [o, ou, sn] = attrs.as_slice() else {
        return Err("it must have exactly the attributes O, OU and serialNumber".into());
    };
    if *o.attr_type() != OID_X509_ORGANIZATION_NAME
        || *ou.attr_type() != OID_X509_ORGANIZATIONAL_UNIT
        || *sn.attr_type() != OID_X509_SERIALNUMBER
    {
        return Err("its attributes must be O, OU and serialNumber, in this order".into());
    }
    if o.as_str().ok() != Some(ORG) {
        return Err(format!("O must be {ORG:?}"));
    }
    let unit = ou.as_str().map_err(|_| "OU is not text".to_string())?;
    Ok(SwptName {
        unit: unit.to_string(),
    })
}

/// Whether `s` is `min..=max` lowercase hex digits.
fn is_lower_hex(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a subnet an accounting authority (`aa_id`) gives a peer of type
/// `peer`: 6 hex digits for a creditors agent; for a debtors agent 8 to 16
/// starting with the authority's own id (the debtor ids it manages), as
/// `swpt-certificates.rst` and the peers' register-peer require.
pub fn check_subnet(subnet: &str, peer: NodeType, aa_id: &str) -> Result<(), SwaptacularError> {
    let bad = |why: &str| SwaptacularError::BadSubnet(subnet.to_string(), why.to_string());
    match peer {
        NodeType::CreditorsAgent if !is_lower_hex(subnet, 6, 6) => Err(bad(
            "a creditors agent's subnet is exactly 6 lowercase hex digits",
        )),
        NodeType::DebtorsAgent if !is_lower_hex(subnet, 8, 16) || !subnet.starts_with(aa_id) => {
            Err(bad(
                "a debtors agent's subnet is 8 to 16 lowercase hex digits starting with the \
                 accounting authority's id",
            ))
        }
        NodeType::AccountingAuthority => Err(bad("only agents get a subnet")),
        _ => Ok(()),
    }
}

/// The text of the `nsComment` an accounting authority puts in a peer certificate.
pub fn subnet_comment(subnet: &str) -> String {
    format!("Subnet: {subnet}")
}

/// The subnet in an `nsComment` text, as swpt_ca_scripts' register-peer reads
/// it (`Subnet: ` then 6 to 16 lowercase hex digits, at the end).
pub fn subnet_of_comment(comment: &str) -> Option<&str> {
    let rest = comment.trim_end_matches(['\n', '\r']);
    let at = rest.rfind("Subnet:")?;
    let hex = rest[at + "Subnet:".len()..].trim_start_matches(' ');
    is_lower_hex(hex, 6, 16).then_some(hex)
}

/// A partner's STOMP servers manifest (`stomp.toml`), checked as swpt_stomp
/// checks it. Values are kept as written: `${NODE_ID}` is replaced by the
/// *dialing* node's id when used ([`StompManifest::host_for`], ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompManifest {
    /// The servers, `host:port`; a client picks one at random (repeats weigh more).
    pub servers: Vec<String>,
    /// The `host` header of CONNECT.
    pub host: String,
    /// The `destination` header of SEND.
    pub destination: String,
    /// The optional `login` header of CONNECT.
    pub login: Option<String>,
    /// The optional `passcode` header of CONNECT (no substitution, as swpt_stomp does).
    pub passcode: Option<String>,
    /// Media types accepted besides `application/json` (which is always accepted).
    pub accepted_content_types: Vec<String>,
}

/// The manifest's keys as TOML gives them; other keys are allowed (the spec says so).
#[derive(Deserialize)]
struct RawManifest {
    servers: Vec<String>,
    host: String,
    destination: String,
    login: Option<String>,
    passcode: Option<String>,
    #[serde(rename = "accepted-content-types", default)]
    accepted_content_types: Vec<String>,
}

/// The placeholder a manifest's values may hold for the dialing node's id.
pub const NODE_ID_PLACEHOLDER: &str = "${NODE_ID}";

impl StompManifest {
    /// Parses and checks a `stomp.toml`: `servers` a non-empty list of
    /// `host:port`, `host` and `destination` strings, optional `login`,
    /// `passcode` and `accepted-content-types`.
    pub fn parse(bytes: &[u8]) -> Result<StompManifest, SwaptacularError> {
        let bad = |m: String| SwaptacularError::BadManifest(m);
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "{} bytes is larger than the {MAX_MANIFEST_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        let raw: RawManifest = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        if raw.servers.is_empty() {
            return Err(bad("`servers` is empty".into()));
        }
        for s in &raw.servers {
            check_endpoint(s).map_err(|e| bad(format!("in `servers`: {e}")))?;
        }
        Ok(StompManifest {
            servers: raw.servers,
            host: raw.host,
            destination: raw.destination,
            login: raw.login,
            passcode: raw.passcode,
            accepted_content_types: raw.accepted_content_types,
        })
    }

    /// A manifest for our own STOMP servers, as swpt_ca_scripts' init-ca writes it.
    pub fn ours(servers: Vec<String>, host: &str, destination: &str) -> StompManifest {
        StompManifest {
            servers,
            host: host.to_string(),
            destination: destination.to_string(),
            login: None,
            passcode: None,
            accepted_content_types: Vec::new(),
        }
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| {
            let mut q = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => q.push_str("\\\""),
                    '\\' => q.push_str("\\\\"),
                    c if c.is_control() => q.push_str(&format!("\\u{:04X}", c as u32)),
                    c => q.push(c),
                }
            }
            q.push('"');
            q
        };
        let list = |items: &[String]| {
            items
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!("servers = [{}]\n", list(&self.servers));
        out.push_str(&format!("host = {}\n", quote(&self.host)));
        out.push_str(&format!("destination = {}\n", quote(&self.destination)));
        if let Some(login) = &self.login {
            out.push_str(&format!("login = {}\n", quote(login)));
        }
        if let Some(passcode) = &self.passcode {
            out.push_str(&format!("passcode = {}\n", quote(passcode)));
        }
        if !self.accepted_content_types.is_empty() {
            out.push_str(&format!(
                "accepted-content-types = [{}]\n",
                list(&self.accepted_content_types)
            ));
        }
        out
    }

    /// The CONNECT `host` header when node `our_id` dials.
    pub fn host_for(&self, our_id: &str) -> String {
        self.host.replace(NODE_ID_PLACEHOLDER, our_id)
    }

    /// The SEND `destination` header when node `our_id` sends.
    pub fn destination_for(&self, our_id: &str) -> String {
        self.destination.replace(NODE_ID_PLACEHOLDER, our_id)
    }

    /// The CONNECT `login` header when node `our_id` dials.
    pub fn login_for(&self, our_id: &str) -> Option<String> {
        self.login
            .as_ref()
            .map(|l| l.replace(NODE_ID_PLACEHOLDER, our_id))
    }

    /// Whether the servers accept bodies of `content_type` (`application/json` always).
    pub fn accepts(&self, content_type: &str) -> bool {
        content_type == "application/json"
            || self
                .accepted_content_types
                .iter()
                .any(|c| c == content_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_types_pair_and_name() {
        use NodeType::*;
        assert!(AccountingAuthority.may_peer_with(CreditorsAgent));
        assert!(DebtorsAgent.may_peer_with(AccountingAuthority));
        assert!(!CreditorsAgent.may_peer_with(DebtorsAgent));
        assert!(!AccountingAuthority.may_peer_with(AccountingAuthority));
        for t in NodeType::ALL {
            assert_eq!(NodeType::from_unit(t.unit()), Some(t));
        }
    }

    #[test]
    fn node_id_rules() {
        let spki = b"not really a key";
        let aa = NodeType::AccountingAuthority;
        assert!(aa.check_node_id("1234abcd", spki).is_ok());
        for bad in ["1234ABCD", "1234abc", "1234abcde", "1234abcg"] {
            assert!(aa.check_node_id(bad, spki).is_err(), "{bad}");
        }
        let derived = node_id_from_spki(spki);
        assert!(NodeType::CreditorsAgent
            .check_node_id(&derived, spki)
            .is_ok());
        let err = NodeType::DebtorsAgent
            .check_node_id(&"0".repeat(32), spki)
            .unwrap_err();
        assert!(err.to_string().contains(&derived), "{err}");
    }

    #[test]
    fn subnets() {
        use NodeType::*;
        assert!(check_subnet("000001", CreditorsAgent, "1234abcd").is_ok());
        assert!(check_subnet("00001", CreditorsAgent, "1234abcd").is_err());
        assert!(check_subnet("1234abcd00", DebtorsAgent, "1234abcd").is_ok());
        assert!(check_subnet("1234abce00", DebtorsAgent, "1234abcd").is_err());
        assert!(check_subnet("000001", AccountingAuthority, "1234abcd").is_err());
        assert_eq!(subnet_of_comment("Subnet: 000001"), Some("000001"));
        assert_eq!(subnet_of_comment("Subnet:1234abcd00\n"), Some("1234abcd00"));
        assert_eq!(subnet_of_comment("Subnet: 00001"), None);
        assert_eq!(subnet_of_comment(""), None);
    }

    #[test]
    fn manifests_parse_like_swpt_stomp() {
        let m = StompManifest::parse(
            b"servers = [\"127.0.0.1:1235\", \"a.example:1\"]\nhost = \"/${NODE_ID}\"\n\
              destination = \"/exchange/creditors_in\"\naccepted-content-types = [\"application/x\"]\n\
              not-described-here = true\n",
        )
        .unwrap();
        assert_eq!(m.servers.len(), 2);
        assert_eq!(m.host_for("1234abcd"), "/1234abcd");
        assert!(m.accepts("application/json") && m.accepts("application/x"));
        assert_eq!(StompManifest::parse(m.to_toml().as_bytes()).unwrap(), m);
        for bad in [
            &b"servers = []\nhost = \"/\"\ndestination = \"/x\"\n"[..],
            b"servers = [\"nohost\"]\nhost = \"/\"\ndestination = \"/x\"\n",
            b"servers = [\"a:1\"]\ndestination = \"/x\"\n",
            b"servers = [\"a:1\"]\nhost = 1\ndestination = \"/x\"\n",
            b"\xff",
        ] {
            assert!(StompManifest::parse(bad).is_err());
        }
        let quoted = StompManifest::ours(vec!["a:1".into()], "/\"\\", "/d");
        assert_eq!(
            StompManifest::parse(quoted.to_toml().as_bytes()).unwrap(),
            quoted
        );
    }
}
