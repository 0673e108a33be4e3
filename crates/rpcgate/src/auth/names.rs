//! User names as clients send them: `user`, `DOMAIN\user` or `user@upn.suffix`.

use std::fmt;

/// A user name split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName {
    /// The bare account name.
    pub name: String,
    /// `DOMAIN` of `DOMAIN\user`.
    pub domain: Option<String>,
    /// `suffix` of `user@suffix`.
    pub upn_suffix: Option<String>,
}

impl UserName {
    /// Splits a name as typed by a user (Basic) or sent by NTLM (with its own domain field).
    pub fn parse(text: &str) -> Self {
        if let Some((domain, name)) = text.split_once('\\') {
            return Self {
                name: name.to_owned(),
                domain: (!domain.is_empty()).then(|| domain.to_owned()),
                upn_suffix: None,
            };
        }
        if let Some((name, suffix)) = text.rsplit_once('@') {
            return Self {
                name: name.to_owned(),
                domain: None,
                upn_suffix: (!suffix.is_empty()).then(|| suffix.to_owned()),
            };
        }
        Self {
            name: text.to_owned(),
            domain: None,
            upn_suffix: None,
        }
    }

    /// An NTLM identity: the user field and the domain field of an AUTHENTICATE_MESSAGE
    /// (whose user field may itself be a UPN).
    pub fn from_ntlm(user: &str, domain: &str) -> Self {
        let mut parsed = Self::parse(user);
        if parsed.domain.is_none() && parsed.upn_suffix.is_none() && !domain.is_empty() {
            parsed.domain = Some(domain.to_owned());
        }
        parsed
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.domain, &self.upn_suffix) {
            (Some(domain), _) => write!(f, "{domain}\\{}", self.name),
            (None, Some(suffix)) => write!(f, "{}@{suffix}", self.name),
            (None, None) => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            UserName::parse("RPCH\\Administrator").to_string(),
            "RPCH\\Administrator"
        );
        assert_eq!(UserName::parse("RPCH\\Administrator").name, "Administrator");
        assert_eq!(UserName::parse("a@b.c").upn_suffix.as_deref(), Some("b.c"));
        assert_eq!(UserName::parse("\\x").domain, None);
        assert_eq!(UserName::from_ntlm("u", "D").to_string(), "D\\u");
        assert_eq!(UserName::from_ntlm("u@x.y", "D").to_string(), "u@x.y");
    }
}
