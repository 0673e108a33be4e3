//! A bounded XML reader for Autodiscover documents: bytes to a small element tree, or an error.
//!
//! Autodiscover requests arrive from anyone who can authenticate (and on anonymous listeners,
//! from anyone), so this reader accepts only what the protocol needs and refuses the rest
//! before it costs anything:
//! - no DTD at all: a `<!DOCTYPE` is an error, so there are no external entities to fetch and
//!   no entity definitions to expand (the "billion laughs" shape cannot even be declared);
//! - the five predefined entities and character references are the only references;
//! - UTF-8 only (an optional byte-order mark is skipped);
//! - at most [`MAX_DEPTH`] levels, [`MAX_ELEMENTS`] elements and [`MAX_TEXT`] characters of
//!   text in one element.
//!
//! quick-xml does the tokenising (it never resolves entities or loads anything by itself);
//! this module adds the limits and the namespaces. Attributes are not kept: nothing in the
//! Outlook request or in the response fields rpcgate reads depends on one.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

/// Deepest nesting accepted (the Outlook request is three levels deep, the response five).
pub const MAX_DEPTH: usize = 16;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 512;
/// Most characters of text kept in one element.
pub const MAX_TEXT: usize = 4096;

/// One element: its namespace (empty when unbound), local name, direct text and children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub namespace: String,
    pub name: String,
    /// The element's own character data (text, CDATA and references), not its children's.
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name (in any namespace).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Why a document was refused. The sender is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The body is not UTF-8.
    #[error("the document is not UTF-8")]
    NotUtf8,
    /// A declaration names another encoding.
    #[error("the document declares encoding {0:?}; only UTF-8 is accepted")]
    Encoding(String),
    /// A document type declaration (refused outright: no DTD, no entities).
    #[error("the document has a DOCTYPE (DTDs and entity declarations are refused)")]
    Doctype,
    /// A reference to an entity other than the five predefined ones.
    #[error("reference to the undeclared entity &{0};")]
    UnknownEntity(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    /// More than [`MAX_TEXT`] characters of text in one element.
    #[error("more than {MAX_TEXT} characters of text in <{0}>")]
    TextTooLong(String),
    /// No root element.
    #[error("the document has no root element")]
    Empty,
    /// Anything the tokeniser refuses (unclosed or mismatched tags, bad syntax, unknown
    /// namespace prefixes, text outside the root).
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// Parses `bytes` into the root element.
pub fn parse(bytes: &[u8]) -> Result<Element, XmlError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = NsReader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        let namespace = match resolved {
            ResolveResult::Bound(ns) => ns.0.to_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(prefix) => {
                return Err(XmlError::Malformed(format!(
                    "unknown namespace prefix {prefix:?}"
                )));
            }
        };
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError::Malformed("content after the root element".into()));
            }
            Event::Start(start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                stack.push(Element {
                    namespace,
                    name: start.local_name().as_ref().to_owned(),
                    ..Element::default()
                });
            }
            Event::Empty(start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let element = Element {
                    namespace,
                    name: start.local_name().as_ref().to_owned(),
                    ..Element::default()
                };
                close(&mut stack, &mut root, element);
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unexpected end tag".into()))?;
                close(&mut stack, &mut root, element);
            }
            Event::Text(text) => append(&mut stack, &text.xml10_content())?,
            Event::CData(data) => append(&mut stack, &data.xml10_content())?,
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => predefined(&reference).ok_or_else(|| {
                        XmlError::UnknownEntity(reference.chars().take(64).collect())
                    })?,
                    Err(e) => return Err(XmlError::Malformed(e.to_string())),
                };
                append(&mut stack, resolved.encode_utf8(&mut [0u8; 4]))?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(decl) => {
                if let Some(Ok(encoding)) = decl.encoding()
                    && !encoding.eq_ignore_ascii_case("utf-8")
                {
                    return Err(XmlError::Encoding(encoding.chars().take(32).collect()));
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(XmlError::Malformed(
                        "the document ends inside an element".into(),
                    ));
                }
                return root.ok_or(XmlError::Empty);
            }
        }
    }
}

/// An ended element goes to its parent, or becomes the root.
fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// Character data for the open element; outside the root only whitespace is allowed.
fn append(stack: &mut [Element], text: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(element) => {
            if element.text.chars().count() + text.chars().count() > MAX_TEXT {
                return Err(XmlError::TextTooLong(element.name.clone()));
            }
            element.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError::Malformed("text outside the root element".into())),
    }
}

/// The five entities XML predefines.
fn predefined(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_text_and_namespaces() {
        let doc = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
            <a:Root xmlns:a=\"urn:a\" xmlns=\"urn:d\"><!-- c --><B>x &amp; y &#x41;&#66;</B>\
            <C><![CDATA[<raw>]]></C><D/></a:Root>";
        let root = parse(doc.as_bytes()).unwrap();
        assert_eq!(
            (root.namespace.as_str(), root.name.as_str()),
            ("urn:a", "Root")
        );
        let b = root.child("B").unwrap();
        assert_eq!(
            (b.namespace.as_str(), b.text.as_str()),
            ("urn:d", "x & y AB")
        );
        assert_eq!(root.child_text("C"), Some("<raw>"));
        assert_eq!(root.child_text("D"), Some(""));
    }

    #[test]
    fn refusals() {
        let cases: Vec<(&[u8], XmlError)> = vec![
            (b"", XmlError::Empty),
            (b"<a>\xff</a>", XmlError::NotUtf8),
            (
                b"<?xml version=\"1.0\" encoding=\"utf-16\"?><a/>",
                XmlError::Encoding("utf-16".into()),
            ),
            (
                b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
                XmlError::Doctype,
            ),
            (b"<a>&x;</a>", XmlError::UnknownEntity("x".into())),
            (
                b"<a/><b/>",
                XmlError::Malformed("content after the root element".into()),
            ),
        ];
        for (doc, expected) in cases {
            assert_eq!(
                parse(doc),
                Err(expected),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        for doc in [
            "<a>",
            "<a></b>",
            "<a><b></a>",
            "x<a/>",
            "<p:a/>",
            "<a>&#0;</a>",
        ] {
            assert!(
                matches!(parse(doc.as_bytes()), Err(XmlError::Malformed(_))),
                "{doc}: {:?}",
                parse(doc.as_bytes())
            );
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        let many = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        assert_eq!(parse(many.as_bytes()), Err(XmlError::TooManyElements));
        let long = format!("<a>{}</a>", "x".repeat(MAX_TEXT + 1));
        assert_eq!(
            parse(long.as_bytes()),
            Err(XmlError::TextTooLong("a".into()))
        );
    }
}
