//! The settings of `nodemesh install`, validated: a bad value is refused
//! with a message saying what to pass instead.

use std::net::SocketAddr;

use nodemesh_proxy::identity::SpiffeId;

use crate::cli::InstallArgs;

/// The default namespace of the agent and of the CA Secret.
pub const DEFAULT_NAMESPACE: &str = "nodemesh-system";
/// The default agent image: this build's version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/example/nodemesh:", env!("CARGO_PKG_VERSION"));
/// The default SPIFFE trust domain (the agent's and `nodemesh ca init`'s default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The default address of the agent's admin endpoint inside its pod: every
/// address of the node, so that kubelet can probe it on the pod's (the
/// node's) address.
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:15000";

/// Ports the agent already listens on, which the admin endpoint must not take.
const RESERVED_PORTS: [(u16, &str); 2] = [
    (super::meta::REDIRECT_PORT, "the outbound listener"),
    (super::meta::TUNNEL_PORT, "the tunnel server"),
];

/// A setting `nodemesh install` refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not a valid Kubernetes namespace name (an RFC 1123 label).
    #[error(
        "invalid namespace {0:?}: a namespace name is at most 63 lowercase letters, digits and '-', \
         starting and ending with a letter or digit; pass e.g. --namespace {DEFAULT_NAMESPACE}"
    )]
    InvalidNamespace(String),
    /// The image reference is empty.
    #[error(
        "the image is empty: pass --image <registry>/<repository>:<tag>, e.g. --image {DEFAULT_IMAGE}, \
         or leave --image out for that default"
    )]
    EmptyImage,
    /// The image reference is not one a container runtime can pull.
    #[error(
        "invalid image {image:?}: {reason}; pass --image <registry>/<repository>:<tag> \
         (or @sha256:<digest>), e.g. --image {DEFAULT_IMAGE}"
    )]
    InvalidImage {
        /// The reference given.
        image: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not a SPIFFE trust domain.
    #[error(
        "invalid trust domain {0:?}: use lowercase letters, digits, '.', '_' and '-', the same as \
         `nodemesh ca init --trust-domain`; e.g. --trust-domain {DEFAULT_TRUST_DOMAIN}"
    )]
    InvalidTrustDomain(String),
    /// The API server address is not `<host>:<port>`.
    #[error(
        "invalid API server address {0:?}: pass the address the nodes reach the Kubernetes API \
         on as <host>:<port>, without a scheme, e.g. --api-server 192.0.2.10:6443"
    )]
    InvalidApiServer(String),
    /// The admin address cannot be probed by kubelet or collides with another listener.
    #[error("invalid admin address {addr}: {reason}; pass e.g. --admin-addr {DEFAULT_ADMIN_ADDR}")]
    InvalidAdminAddr {
        /// The address given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The validated settings of `nodemesh install`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallOptions {
    namespace: String,
    image: String,
    trust_domain: String,
    admin_addr: SocketAddr,
    api_server: Option<ApiServer>,
}

/// The Kubernetes API server the agents dial directly, bypassing the
/// `kubernetes` Service (whose translation the agents themselves provide
/// on clusters without kube-proxy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiServer {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl InstallOptions {
    /// Validates every setting.
    pub fn new(
        namespace: &str,
        image: &str,
        trust_domain: &str,
        admin_addr: SocketAddr,
    ) -> Result<Self, Error> {
        Ok(Self {
            namespace: parse_namespace(namespace)?,
            image: parse_image(image)?,
            trust_domain: parse_trust_domain(trust_domain)?,
            admin_addr: check_admin_addr(admin_addr)?,
            api_server: None,
        })
    }

    /// Makes the agents dial the API server at `address` (`<host>:<port>`)
    /// instead of the `kubernetes` Service.
    pub fn with_api_server(mut self, address: &str) -> Result<Self, Error> {
        self.api_server = Some(api_server(address)?);
        Ok(self)
    }

    /// The settings the command line asks for.
    pub fn from_args(args: &InstallArgs) -> Result<Self, Error> {
        let options = Self::new(
            &args.namespace,
            &args.image,
            &args.trust_domain,
            args.admin_addr,
        )?;
        match &args.api_server {
            Some(address) => options.with_api_server(address),
            None => Ok(options),
        }
    }

    /// Namespace of the agent, its ServiceAccount, ConfigMap and CA Secret.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The agent's container image.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The SPIFFE trust domain the agents issue identities in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Where the agent's admin endpoint listens (in the node's network namespace).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The API server the agents dial, if not the `kubernetes` Service.
    pub fn api_server(&self) -> Option<&ApiServer> {
        self.api_server.as_ref()
    }
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            image: DEFAULT_IMAGE.to_owned(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            admin_addr: DEFAULT_ADMIN_ADDR.parse().expect("a valid socket address"),
            api_server: None,
        }
    }
}

/// Checks a namespace name (an RFC 1123 label); the value parser of `--namespace`.
pub fn parse_namespace(namespace: &str) -> Result<String, Error> {
    let bytes = namespace.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum);
    if ok {
        Ok(namespace.to_owned())
    } else {
        Err(Error::InvalidNamespace(namespace.to_owned()))
    }
}

/// Checks a container image reference (`[host[:port]/]path[:tag][@digest]`);
/// the value parser of `--image`.
pub fn parse_image(image: &str) -> Result<String, Error> {
    let invalid = |reason| Error::InvalidImage {
        image: image.to_owned(),
        reason,
    };
    if image.trim().is_empty() {
        return Err(Error::EmptyImage);
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains whitespace"));
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if !valid {
            return Err(invalid("the digest is not <algorithm>:<hex>"));
        }
    }
    // A ':' after the last '/' starts the tag; one before it is a registry port.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if name.is_empty() {
        return Err(invalid("the repository name is missing"));
    }
    if name.split('/').any(str::is_empty) {
        return Err(invalid("a path component is empty"));
    }
    let path = match name.split_once('/') {
        // The first component is a registry host if it looks like one.
        Some((host, path)) if host.contains(['.', ':']) || host == "localhost" => path,
        _ => name,
    };
    if !path
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
    {
        return Err(invalid(
            "a repository path has only lowercase letters, digits, '.', '_', '-' and '/'",
        ));
    }
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(invalid(
                "a tag is 1 to 128 letters, digits, '.', '_' and '-', not starting with '.' or '-'",
            ));
        }
    }
    Ok(image.to_owned())
}

/// Checks a SPIFFE trust domain; the value parser of `--trust-domain`.
pub fn parse_trust_domain(trust_domain: &str) -> Result<String, Error> {
    SpiffeId::new(trust_domain, "default", "default")
        .map(|_| trust_domain.to_owned())
        .map_err(|_| Error::InvalidTrustDomain(trust_domain.to_owned()))
}

/// Checks an API server address (`<host>:<port>`, an IPv6 host in
/// brackets); the value parser of `--api-server`.
pub fn parse_api_server(address: &str) -> Result<String, Error> {
    api_server(address).map(|_| address.to_owned())
}

fn api_server(address: &str) -> Result<ApiServer, Error> {
    let invalid = || Error::InvalidApiServer(address.to_owned());
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => {
            let inner = bracketed.strip_suffix(']').ok_or_else(invalid)?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| invalid())?
                .to_string()
        }
        None => host.to_owned(),
    };
    let host_ok = !host.is_empty()
        && (host.parse::<std::net::Ipv6Addr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b)));
    if port == 0 || !host_ok {
        return Err(invalid());
    }
    Ok(ApiServer { host, port })
}

/// Parses and checks the admin address; the value parser of `--admin-addr`.
pub fn parse_admin_addr(addr: &str) -> Result<SocketAddr, Error> {
    let parsed = addr.parse().map_err(|_| Error::InvalidAdminAddr {
        addr: addr.to_owned(),
        reason: "not an <ip>:<port> address".into(),
    })?;
    check_admin_addr(parsed)
}

fn check_admin_addr(addr: SocketAddr) -> Result<SocketAddr, Error> {
    let invalid = |reason: String| Error::InvalidAdminAddr {
        addr: addr.to_string(),
        reason,
    };
    if addr.ip().is_loopback() {
        return Err(invalid(
            "kubelet probes the pod's address, which a loopback address does not listen on".into(),
        ));
    }
    if !addr.ip().is_unspecified() {
        return Err(invalid(
            "every node has its own address, so the agent listens on all of them: use 0.0.0.0 or [::]"
                .into(),
        ));
    }
    if addr.port() == 0 {
        return Err(invalid("kubelet needs a fixed port to probe".into()));
    }
    if let Some((_, what)) = RESERVED_PORTS.iter().find(|(p, _)| *p == addr.port()) {
        return Err(invalid(format!("port {} is {what}'s", addr.port())));
    }
    Ok(addr)
}
