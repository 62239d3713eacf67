//! Fixed-capacity containers used in messages (no heap).
//!
//! * [`Str<N>`]: UTF-8 text of at most `N` bytes; on the wire a postcard
//!   `str` (varint byte length, then the bytes).
//! * [`Bounded<T, N>`]: at most `N` values; on the wire a postcard sequence
//!   (varint element count, then the elements).
//!
//! Decoding rejects a string longer than `N` bytes or not valid UTF-8, and a
//! sequence of more than `N` elements.

use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};

/// A value did not fit its fixed capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError;

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("value exceeds the fixed capacity")
    }
}

/// UTF-8 text of at most `N` bytes, stored inline.
#[derive(Clone, Copy)]
pub struct Str<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Str<N> {
    /// The capacity in bytes.
    pub const CAPACITY: usize = N;

    /// The empty string.
    pub const fn empty() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// Copies `s`; fails if it is longer than `N` bytes.
    pub fn new(s: &str) -> Result<Self, CapacityError> {
        let mut out = Self::empty();
        out.buf
            .get_mut(..s.len())
            .ok_or(CapacityError)?
            .copy_from_slice(s.as_bytes());
        out.len = s.len();
        Ok(out)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Always valid: only `new` writes the buffer, from a `&str`.
        self.buf
            .get(..self.len)
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for Str<N> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<const N: usize> TryFrom<&str> for Str<N> {
    type Error = CapacityError;
    fn try_from(s: &str) -> Result<Self, CapacityError> {
        Self::new(s)
    }
}

impl<const N: usize> core::ops::Deref for Str<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> PartialEq for Str<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<const N: usize> Eq for Str<N> {}

impl<const N: usize> PartialEq<str> for Str<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for Str<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> fmt::Debug for Str<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for Str<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> Serialize for Str<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de, const N: usize> Deserialize<'de> for Str<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> Visitor<'_> for V<N> {
            type Value = Str<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {N} bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<N>, E> {
                Str::new(v).map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_str(V::<N>)
    }
}

/// At most `N` values of `T`, stored inline.
#[derive(Clone, Copy, PartialEq)]
pub struct Bounded<T, const N: usize> {
    // Invariant: the first `len` slots are `Some`, the rest `None`.
    items: [Option<T>; N],
    len: usize,
}

impl<T, const N: usize> Bounded<T, N> {
    /// The capacity.
    pub const CAPACITY: usize = N;

    /// An empty sequence.
    pub fn new() -> Self {
        Self {
            items: core::array::from_fn(|_| None),
            len: 0,
        }
    }

    /// Appends `value`; gives it back if the sequence is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(value);
                self.len += 1;
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Collects `values`; fails if there are more than `N`.
    pub fn try_from_iter(values: impl IntoIterator<Item = T>) -> Result<Self, CapacityError> {
        let mut out = Self::new();
        for v in values {
            out.push(v).map_err(|_| CapacityError)?;
        }
        Ok(out)
    }

    /// The value at `index`.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.items.get(index).and_then(Option::as_ref)
    }

    /// The values, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map_while(Option::as_ref)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T, const N: usize> Default for Bounded<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for Bounded<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Serialize, const N: usize> Serialize for Bounded<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len))?;
        for v in self.iter() {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a sequence of at most {N} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                if let Some(n) = seq.size_hint().filter(|&n| n > N) {
                    return Err(de::Error::invalid_length(n, &self));
                }
                let mut out = Bounded::new();
                while let Some(v) = seq.next_element()? {
                    if out.push(v).is_err() {
                        return Err(de::Error::invalid_length(N.saturating_add(1), &self));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V::<T, N>(PhantomData))
    }
}
