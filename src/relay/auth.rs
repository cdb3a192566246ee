//! AUTH with the relay: PLAIN, LOGIN or XOAUTH2 (lettre encodes the responses), chosen from
//! what EHLO offered; when nothing fits, the error names what each side has. The secret
//! never appears in a Debug or error text.

use super::reply::AuthGap;
use super::{Kind, Reply, Session, SessionError, Stage};
use base64::Engine;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMech {
    Plain,
    Login,
    Xoauth2,
}

#[derive(Clone)]
pub struct Auth {
    /// None = PLAIN if offered, else LOGIN.
    pub mech: Option<AuthMech>,
    pub username: String,
    /// Password or OAuth2 access token.
    pub secret: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Auth {{ mech: {:?}, username: {:?}, secret: <hidden> }}",
            self.mech, self.username
        )
    }
}

impl Session {
    /// Log in (after [`Session::connect`] with a target without `auth`, as `relayq test`
    /// does to show each step; `connect` itself calls this when the target has `auth`).
    pub(crate) fn auth(&mut self, a: &Auth) -> Result<(), SessionError> {
        use lettre::transport::smtp::authentication::{Credentials, Mechanism};
        let offered = &self.caps.auth;
        let has = |m: AuthMech| offered.iter().any(|o| o == m.name());
        let gap = |wanted| {
            SessionError::new(
                Stage::Auth,
                Kind::AuthUnavailable(AuthGap {
                    offered: offered.clone(),
                    wanted,
                }),
            )
        };
        let mech = match a.mech {
            _ if offered.is_empty() => return Err(gap(a.mech)),
            Some(m) if has(m) => m,
            Some(m) => return Err(gap(Some(m))),
            None if has(AuthMech::Plain) => AuthMech::Plain,
            None if has(AuthMech::Login) => AuthMech::Login,
            None => return Err(gap(None)),
        };
        let creds = Credentials::new(a.username.clone(), a.secret.clone());
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let fail = |r: Reply| {
            if r.is_temp() {
                SessionError::new(Stage::Auth, Kind::Reply(r))
            } else {
                SessionError::new(Stage::Auth, Kind::AuthFailed(r))
            }
        };
        let resp = |m: Mechanism, ch: Option<&str>| {
            m.response(&creds, ch).map_err(|_| {
                SessionError::new(
                    Stage::Auth,
                    Kind::Protocol("cannot encode AUTH response".into()),
                )
            })
        };
        let r = match mech {
            AuthMech::Plain => {
                let ir = resp(Mechanism::Plain, None)?;
                self.command(&format!("AUTH PLAIN {}", b64(&ir)), Stage::Auth)?
            }
            AuthMech::Xoauth2 => {
                let ir = resp(Mechanism::Xoauth2, None)?;
                let r = self.command(&format!("AUTH XOAUTH2 {}", b64(&ir)), Stage::Auth)?;
                if r.code == 334 {
                    // An error challenge: answer empty to get the final failure.
                    self.command("", Stage::Auth)?
                } else {
                    r
                }
            }
            AuthMech::Login => {
                let r = self.command("AUTH LOGIN", Stage::Auth)?;
                if r.code != 334 {
                    return Err(fail(r));
                }
                let r = self.command(&b64(&a.username), Stage::Auth)?;
                if r.code != 334 {
                    return Err(fail(r));
                }
                self.command(&b64(&a.secret), Stage::Auth)?
            }
        };
        if r.code != 235 {
            return Err(fail(r));
        }
        Ok(())
    }
}
