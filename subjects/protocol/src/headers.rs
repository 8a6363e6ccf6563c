//! Message headers as the binding writes and reads them, without a NATS client.
//!
//! The binding writes [`Headers`] and reads anything that is a [`HeaderSource`]. With the
//! `nats` feature (what `murmur-subjects` builds), async-nats's `HeaderMap` is a
//! `HeaderSource` and `Headers` converts into one, so a received message is read in place
//! and an encoded one is published as is.

use std::borrow::Cow;

/// The header naming the one participant an event is addressed to
/// ([`crate::payload::Payload::recipient`]): written by the log beside the event, read by
/// projectors to pass over others' events undecoded. Not a CloudEvent attribute: a routing
/// hint outside the signed record.
pub const RECIPIENT: &str = "Murmur-Recipient";

/// Headers written by the binding: names and values in insertion order, one value per name.
/// Fixed names and values (`Content-Type`, `ce-id`…) are borrowed, not copied: encoding an
/// event allocates only what depends on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Cow<'static, str>, Cow<'static, str>)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing a value the name had (names compare exactly, as
    /// NATS compares them).
    pub fn insert(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name` (exact name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Each name and value, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Headers the binding can read: each value of each name, in order.
pub trait HeaderSource: std::fmt::Debug + Sync {
    /// Calls `each(name, value, index)` for every value, where `index` counts the values of
    /// that name (0 for the first).
    fn visit<'a>(&'a self, each: &mut dyn FnMut(&'a str, &'a str, usize));

    /// The first value of `name`, compared without regard to case.
    fn first_ci(&self, name: &str) -> Option<&str> {
        let mut found = None;
        self.visit(&mut |n, v, index| {
            if found.is_none() && index == 0 && n.eq_ignore_ascii_case(name) {
                found = Some(v);
            }
        });
        found
    }
}

impl HeaderSource for Headers {
    fn visit<'a>(&'a self, each: &mut dyn FnMut(&'a str, &'a str, usize)) {
        for (name, value) in &self.0 {
            each(name, value, 0);
        }
    }
}

impl<H: HeaderSource + ?Sized> HeaderSource for &H {
    fn visit<'a>(&'a self, each: &mut dyn FnMut(&'a str, &'a str, usize)) {
        (**self).visit(each)
    }
}

#[cfg(feature = "nats")]
impl HeaderSource for async_nats::HeaderMap {
    fn visit<'a>(&'a self, each: &mut dyn FnMut(&'a str, &'a str, usize)) {
        for (name, values) in self.iter() {
            for (index, value) in values.iter().enumerate() {
                each(name.as_ref(), value.as_str(), index);
            }
        }
    }
}

#[cfg(feature = "nats")]
impl From<Headers> for async_nats::HeaderMap {
    fn from(headers: Headers) -> Self {
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in headers.0 {
            map.insert(name.as_ref(), value.as_ref());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_keeps_order() {
        let mut h = Headers::new();
        h.insert("b", "1");
        h.insert("a", "2");
        h.insert("b", "3");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("b", "3"), ("a", "2")]);
        assert_eq!(h.get("a"), Some("2"));
        assert_eq!(h.get("A"), None);
        assert_eq!(h.first_ci("A"), Some("2"));
        assert_eq!(h.len(), 2);
    }
}
