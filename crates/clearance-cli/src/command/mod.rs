pub(crate) mod authorize;
pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod policy;
pub(crate) mod principal;
pub(crate) mod serve;
pub(crate) mod verify;
