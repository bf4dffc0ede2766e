//! GTID bookkeeping for both flavours and the connector's resume token.
//!
//! - MariaDB: a GTID is `domain-server-seq`; a position is a list with one GTID per replication
//!   domain (`0-1-42,1-2-7`), handed to the server in `@slave_connect_state`.
//! - MySQL: a GTID is `source_uuid:gno`; a position is the set of executed GTIDs
//!   (`uuid:1-42:50-60,uuid2:1-3`), sent as SIDs with intervals in `COM_BINLOG_DUMP_GTID`.

use crate::CdcError;
use std::collections::BTreeMap;
use std::fmt;

/// Which server family the source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Mysql,
    Mariadb,
}

impl Flavor {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Mysql => "mysql",
            Flavor::Mariadb => "mariadb",
        }
    }

    /// From `SELECT VERSION()`: MariaDB always names itself there.
    pub fn detect(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::Mariadb
        } else {
            Flavor::Mysql
        }
    }

    fn parse(s: &str) -> Option<Flavor> {
        match s {
            "mysql" => Some(Flavor::Mysql),
            "mariadb" => Some(Flavor::Mariadb),
            _ => None,
        }
    }
}

/// A MariaDB GTID position: the last GTID per domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariaGtidList {
    /// domain → (server id, sequence number)
    pub domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaGtidList {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = MariaGtidList::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (d, srv, seq) = parse_maria_gtid(part)?;
            if out.domains.insert(d, (srv, seq)).is_some() {
                return Err(format!("domain {d} appears twice in `{s}`"));
            }
        }
        Ok(out)
    }

    pub fn update(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// True when `self` is at or past every domain of `other` (sequence numbers only).
    pub fn covers(&self, other: &MariaGtidList) -> bool {
        other
            .domains
            .iter()
            .all(|(d, (_, seq))| self.domains.get(d).is_some_and(|(_, s)| s >= seq))
    }
}

impl fmt::Display for MariaGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (d, (srv, seq))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}-{srv}-{seq}")?;
        }
        Ok(())
    }
}

pub fn parse_maria_gtid(s: &str) -> Result<(u32, u32, u64), String> {
    let bad = || format!("`{s}` is not a MariaDB GTID (domain-server-sequence)");
    let mut it = s.splitn(3, '-');
    let d = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let srv = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let seq = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    Ok((d, srv, seq))
}

/// A MySQL GTID set: per source UUID, sorted disjoint closed intervals of transaction numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    pub sids: BTreeMap<[u8; 16], Vec<(u64, u64)>>,
}

pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return Err(format!("`{s}` is not a UUID"));
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16)
            .map_err(|_| format!("`{s}` is not a UUID"))?;
    }
    Ok(out)
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl MysqlGtidSet {
    /// Parses `uuid:1-5:7,uuid2:3` (whitespace and newlines, as `gtid_executed` prints them, are
    /// ignored).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = MysqlGtidSet::default();
        let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        for part in clean.split(',').filter(|p| !p.is_empty()) {
            let mut it = part.split(':');
            let uuid = parse_uuid(it.next().unwrap_or_default())?;
            for iv in it {
                let (a, b) = match iv.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (iv, iv),
                };
                let bad = || format!("`{iv}` is not a GTID interval in `{part}`");
                let a: u64 = a.parse().map_err(|_| bad())?;
                let b: u64 = b.parse().map_err(|_| bad())?;
                if a == 0 || b < a {
                    return Err(bad());
                }
                out.add_interval(uuid, a, b);
            }
        }
        Ok(out)
    }

    pub fn add(&mut self, uuid: [u8; 16], gno: u64) {
        self.add_interval(uuid, gno, gno);
    }

    fn add_interval(&mut self, uuid: [u8; 16], a: u64, b: u64) {
        let ivs = self.sids.entry(uuid).or_default();
        ivs.push((a, b));
        ivs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ivs.len());
        for &(s, e) in ivs.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ivs = merged;
    }

    pub fn contains(&self, uuid: &[u8; 16], gno: u64) -> bool {
        self.sids
            .get(uuid)
            .is_some_and(|ivs| ivs.iter().any(|&(a, b)| a <= gno && gno <= b))
    }

    /// True when every GTID of `other` is in `self`.
    pub fn is_superset(&self, other: &MysqlGtidSet) -> bool {
        other.sids.iter().all(|(u, ivs)| {
            let mine = self.sids.get(u).map(Vec::as_slice).unwrap_or(&[]);
            ivs.iter()
                .all(|&(a, b)| mine.iter().any(|&(x, y)| x <= a && b <= y))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sids.is_empty()
    }

    /// The set as `COM_BINLOG_DUMP_GTID` wants it (intervals are half-open there).
    pub fn to_sids(&self) -> Vec<mysql_async::Sid<'static>> {
        self.sids
            .iter()
            .map(|(u, ivs)| {
                mysql_async::Sid::new(*u).with_intervals(
                    ivs.iter()
                        .map(|&(a, b)| mysql_async::GnoInterval::new(a, b + 1))
                        .collect(),
                )
            })
            .collect()
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (u, ivs)) in self.sids.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&format_uuid(u))?;
            for &(a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

/// Where the connector resumes: flavour, GTID position (empty when GTIDs are not used), the
/// binlog file and the offset just after the last acknowledged commit, and — while a transaction
/// larger than a batch is delivered in pieces — how many of its rows were acknowledged; during an
/// initial snapshot, how far it got.
///
/// Rendered as
/// `flavor=mariadb;gtid=0-1-42;file=binlog.000003;pos=1234[;txn=<id>;skip=<n>][;snap=<hex>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeToken {
    pub flavor: Flavor,
    pub gtid: String,
    pub file: String,
    pub pos: u64,
    /// (transaction id, rows already acknowledged) of the transaction after `pos`.
    pub partial: Option<(String, u64)>,
    /// An initial snapshot under way: the table being copied and the primary key of its last
    /// acknowledged row (an opaque JSON value, see `scan::encode_key`). Tables listed before it
    /// in the configuration are copied.
    pub snapshot: Option<(String, serde_json::Value)>,
}

impl ResumeToken {
    pub fn parse(s: &str) -> Result<Self, CdcError> {
        let bad =
            |why: &str| CdcError::Checkpoint(format!("malformed MySQL resume token `{s}`: {why}"));
        let mut flavor = None;
        let mut gtid = String::new();
        let mut file = None;
        let mut pos = None;
        let mut txn = None;
        let mut skip = None;
        let mut snapshot = None;
        for part in s.split(';') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            match k {
                "flavor" => flavor = Some(Flavor::parse(v).ok_or_else(|| bad("unknown flavor"))?),
                "gtid" => gtid = v.to_string(),
                "file" => file = Some(v.to_string()),
                "pos" => pos = Some(v.parse().map_err(|_| bad("pos is not a number"))?),
                "txn" => txn = Some(v.to_string()),
                "skip" => skip = Some(v.parse().map_err(|_| bad("skip is not a number"))?),
                "snap" => {
                    // Hex of `[table, key]` in JSON: table names may hold `;` or `=`.
                    let parsed = hex::decode(v)
                        .ok()
                        .and_then(|b| {
                            serde_json::from_slice::<(String, serde_json::Value)>(&b).ok()
                        })
                        .ok_or_else(|| bad("snap is not hex of [table, key]"))?;
                    snapshot = Some(parsed);
                }
                _ => return Err(bad("unknown key")),
            }
        }
        let flavor = flavor.ok_or_else(|| bad("no flavor"))?;
        match flavor {
            Flavor::Mariadb => MariaGtidList::parse(&gtid).map(|_| ()),
            Flavor::Mysql => MysqlGtidSet::parse(&gtid).map(|_| ()),
        }
        .map_err(|e| bad(&e))?;
        Ok(ResumeToken {
            flavor,
            gtid,
            file: file.ok_or_else(|| bad("no file"))?,
            pos: pos.ok_or_else(|| bad("no pos"))?,
            partial: match (txn, skip) {
                (Some(t), Some(n)) => Some((t, n)),
                (None, None) => None,
                _ => return Err(bad("txn and skip go together")),
            },
            snapshot,
        })
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "flavor={};gtid={};file={};pos={}",
            self.flavor.as_str(),
            self.gtid,
            self.file,
            self.pos
        );
        if let Some((t, n)) = &self.partial {
            s.push_str(&format!(";txn={t};skip={n}"));
        }
        if let Some(progress) = &self.snapshot {
            let json = serde_json::to_vec(progress).unwrap_or_default();
            s.push_str(";snap=");
            s.push_str(&hex::encode(json));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maria_lists_round_trip_and_compare() {
        let l = MariaGtidList::parse("0-1-42, 1-2-7").unwrap();
        assert_eq!(l.to_string(), "0-1-42,1-2-7");
        let mut later = l.clone();
        later.update(0, 1, 50);
        assert!(later.covers(&l));
        assert!(!l.covers(&later));
        assert!(MariaGtidList::parse("").unwrap().is_empty());
        assert!(MariaGtidList::parse("0-1").is_err());
        assert!(MariaGtidList::parse("0-1-2,0-1-3").is_err());
    }

    #[test]
    fn mysql_sets_parse_merge_and_render() {
        let s = MysqlGtidSet::parse(
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7,\n3e11fa47-71ca-11e1-9e33-c80aa9429562:6",
        )
        .unwrap();
        assert_eq!(s.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7");
        let u = parse_uuid("3e11fa47-71ca-11e1-9e33-c80aa9429562").unwrap();
        assert!(s.contains(&u, 7) && !s.contains(&u, 8));
        let mut t = s.clone();
        t.add(u, 9);
        assert_eq!(t.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7:9");
        assert!(t.is_superset(&s) && !s.is_superset(&t));
        assert!(MysqlGtidSet::parse("nope:1").is_err());
        assert!(MysqlGtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:5-2").is_err());
    }

    #[test]
    fn tokens_round_trip() {
        let t = ResumeToken {
            flavor: Flavor::Mariadb,
            gtid: "0-1-42".into(),
            file: "binlog.000003".into(),
            pos: 1234,
            partial: Some(("0-1-43".into(), 4000)),
            snapshot: None,
        };
        let s = t.render();
        assert_eq!(
            s,
            "flavor=mariadb;gtid=0-1-42;file=binlog.000003;pos=1234;txn=0-1-43;skip=4000"
        );
        assert_eq!(ResumeToken::parse(&s).unwrap(), t);
        // Snapshot progress survives any table name.
        let t = ResumeToken {
            partial: None,
            snapshot: Some(("we;ird=name".into(), serde_json::json!([{"i": 7}]))),
            ..t
        };
        assert_eq!(ResumeToken::parse(&t.render()).unwrap(), t);
        assert!(ResumeToken::parse("flavor=mariadb;gtid=;file=a;pos=4;snap=zz").is_err());
        assert!(ResumeToken::parse("flavor=mysql;gtid=x;file=a;pos=4").is_err());
        assert!(ResumeToken::parse("flavor=mariadb;gtid=;file=a").is_err());
        assert!(ResumeToken::parse("0/16B3748").is_err());
    }

    #[test]
    fn flavor_detection() {
        assert_eq!(
            Flavor::detect("10.11.19-MariaDB-0+deb12u1-log"),
            Flavor::Mariadb
        );
        assert_eq!(Flavor::detect("8.0.36"), Flavor::Mysql);
    }
}
