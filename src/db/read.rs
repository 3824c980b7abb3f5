//! Reads of people: resolve an identifier, one person, suppression, everyone.

use crate::error::Result;
use crate::index::Bitmaps;
use crate::model::{Ident, IdentKind, Person};
use crate::store::{ident_key, pid_key, AttributesF, Family, PeopleF, SuppressedF};

use super::ProfileDb;

impl ProfileDb {
    pub(crate) fn read_gate(&self) -> std::sync::RwLockReadGuard<'_, Bitmaps> {
        self.inner
            .gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn resolve(&self, ident: &Ident) -> Result<Option<u32>> {
        let norm = self.inner.config.limits.ident(ident)?;
        let store = &self.inner.store;
        if ident.kind == IdentKind::CioId {
            let Some(pid) = crate::model::PersonId::from_cio_id(&norm) else {
                return Ok(None);
            };
            return Ok(store.get::<PeopleF>(&pid_key(pid.0))?.map(|_| pid.0));
        }
        store.get::<crate::store::IdentifiersF>(&ident_key(ident.kind, &norm))
    }

    /// The person with identifier `ident` (emails match in any case), or `None`.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) when the identifier is malformed; [`Error::Corrupted`](crate::Error::Corrupted) when a
    /// record is damaged.
    pub fn person(&self, ident: &Ident) -> Result<Option<Person>> {
        let _gate = self.read_gate();
        match self.resolve(ident)? {
            Some(pid) => self.load_person(pid),
            None => Ok(None),
        }
    }

    /// Person `pid` with their attributes, as stored; `None` when nobody has the id.
    pub(crate) fn load_person(&self, pid: u32) -> Result<Option<Person>> {
        let store = &self.inner.store;
        let Some(rec) = store.get::<PeopleF>(&pid_key(pid))? else {
            return Ok(None);
        };
        let attrs = store.get::<AttributesF>(&pid_key(pid))?;
        Ok(Some(rec.into_person(pid, attrs)))
    }

    /// Whether `ident` is suppressed.
    ///
    /// # Errors
    /// As [`person`](ProfileDb::person).
    pub fn is_suppressed(&self, ident: &Ident) -> Result<bool> {
        if ident.kind == IdentKind::CioId {
            return Ok(false);
        }
        let norm = self.inner.config.limits.ident(ident)?;
        Ok(self
            .inner
            .store
            .get::<SuppressedF>(&ident_key(ident.kind, &norm))?
            .is_some())
    }

    /// Every person, in id order.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a record is damaged.
    pub fn people(&self) -> Result<Vec<Person>> {
        let _gate = self.read_gate();
        let store = &self.inner.store;
        let mut out = Vec::new();
        for item in store.scan::<PeopleF>(&[], false, None) {
            let (key, rec) = item?;
            let pid = crate::store::pid_from_key(Family::People, &key)?;
            let attrs = store.get::<AttributesF>(&key)?;
            out.push(rec.into_person(pid, attrs));
        }
        Ok(out)
    }
}
