//! The doctor's DNS: hickory's resolver on a one-thread tokio runtime (3 s, one attempt,
//! given up after the first unreachable server), behind [`Lookup`] so the checks can be
//! tested from a table.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DnsFail {
    /// NXDOMAIN or no record of that type: a finding about the domain.
    Missing,
    /// The DNS server could not be asked (timeout, SERVFAIL, refused, unreachable).
    Unreachable(String),
}

/// One answer record we care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rec {
    Txt(String),
    Cname(String),
}

/// Where TXT (and CNAME) records come from: the resolver, or a table in unit tests.
pub(super) trait Lookup {
    fn query(&self, name: &str, txt_or_cname: RecordType)
    -> std::result::Result<Vec<Rec>, DnsFail>;
    fn txt(&self, name: &str) -> std::result::Result<Vec<String>, DnsFail> {
        Ok(self
            .query(name, RecordType::TXT)?
            .into_iter()
            .filter_map(|r| match r {
                Rec::Txt(t) => Some(t),
                Rec::Cname(_) => None,
            })
            .collect())
    }
}

pub(super) struct Dns {
    rt: tokio::runtime::Runtime,
    resolver: TokioResolver,
    /// Set at the first failure to reach DNS: later lookups fail at once, no more waiting.
    down: RefCell<Option<String>>,
}

impl Dns {
    pub(super) fn new(server: Option<SocketAddr>) -> std::result::Result<Dns, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let provider = TokioRuntimeProvider::default();
        let mut b = match server {
            Some(addr) => {
                let conns = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                let ns = NameServerConfig::new(addr.ip(), true, conns);
                Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
            }
            None => Resolver::builder(provider).map_err(|e| e.to_string())?,
        };
        let o = b.options_mut();
        o.timeout = Duration::from_secs(3);
        o.attempts = 1;
        let resolver = b.build().map_err(|e| e.to_string())?;
        Ok(Dns {
            rt,
            resolver,
            down: RefCell::new(None),
        })
    }
}

impl Lookup for Dns {
    fn query(&self, name: &str, rtype: RecordType) -> std::result::Result<Vec<Rec>, DnsFail> {
        if let Some(why) = self.down.borrow().clone() {
            return Err(DnsFail::Unreachable(why));
        }
        // Fully qualified: no search domains appended.
        let Ok(n) = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))) else {
            return Err(DnsFail::Missing);
        };
        match self.rt.block_on(self.resolver.lookup(n, rtype)) {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::TXT(t) => Some(Rec::Txt(
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s))
                            .collect(),
                    )),
                    RData::CNAME(c) => Some(Rec::Cname(c.0.to_string())),
                    _ => None,
                })
                .collect()),
            Err(NetError::Dns(DnsError::NoRecordsFound(nr)))
                if matches!(
                    nr.response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                Err(DnsFail::Missing)
            }
            Err(e) => {
                let why = e.to_string();
                *self.down.borrow_mut() = Some(why.clone());
                Err(DnsFail::Unreachable(why))
            }
        }
    }
}
