//! The Rust SDK for Steward resource types.
//!
//! A resource type is a WebAssembly component that exports the
//! `steward:resource/resource-type` interface of the `plugin` world in
//! `wit/`. This crate hides the generated bindings: a plugin author
//! implements [`ResourceType`] for the type and [`Instance`] for one
//! configured resource, then calls [`export_plugin!`] once.
//!
//! ```text
//! use steward_sdk::{export_plugin, CallContext, Error, Instance, ResourceType, TypeInfo};
//!
//! #[derive(serde::Deserialize)]
//! struct Props { path: String }
//!
//! struct Marker { path: String }
//!
//! impl ResourceType for Marker {
//!     type Properties = Props;
//!     type Instance = Marker;
//!     fn metadata() -> TypeInfo { TypeInfo::new("marker", "0.1.0", "a marker file").build() }
//!     fn open(_name: &str, props: Props) -> Result<Marker, Error> { Ok(Marker { path: props.path }) }
//! }
//! // impl Instance for Marker { ... }
//! export_plugin!(Marker);
//! ```
//!
//! What a plugin gets besides the traits:
//! - typed properties: the host passes text values; [`properties::parse`]
//!   reads them by the schema in [`ResourceType::metadata`] into any
//!   `serde::Deserialize` type, with defaults applied and every problem named;
//! - logging macros ([`info!`], [`warn!`], ...) that land in the host's
//!   tracing, tagged with the resource's name;
//! - [`host`] functions: signal a failure at once, report progress, node
//!   info, fencing token, a deadline-bounded sleep;
//! - [`process::Supervised`], a program started through the `process`
//!   capability with a graceful stop.
#![deny(missing_docs)]

// Lets the generated bindings name this crate by its public path, from this
// crate and from the plugin crates that expand `export_plugin!`.
extern crate self as steward_sdk;

pub mod host;
pub mod metadata;
pub mod process;
pub mod properties;

#[doc(hidden)]
pub mod bindings {
    //! Generated from `wit/`; plugins use the re-exports at the crate root.
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        // `sdk/wit` is a symlink to the workspace's `wit/`: one contract, yet
        // inside this package, so `cargo package` copies the files into the
        // published crate (and `steward plugin new` embeds them).
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "steward_sdk::bindings",
        runtime_path: "steward_sdk::__private::wit_bindgen::rt",
        generate_all,
    });
}

pub use bindings::steward::resource::types::{
    CallContext, Capability, CheckLevel, ClusterEvent, Error, GroupMove, Health, Problem, PropertyKind, PropertySpec,
    Timing, TypeInfo,
};
pub use metadata::TypeInfoBuilder;
pub use serde;

/// A resource type: what every resource of it shares.
pub trait ResourceType: 'static {
    /// The resource's properties, read from the operator's text values by
    /// the schema that [`ResourceType::metadata`] declares. Field names are
    /// matched to property names as written, so use
    /// `#[serde(rename_all = "kebab-case")]` for kebab-case properties.
    type Properties: serde::de::DeserializeOwned;
    /// One configured resource of this type.
    type Instance: Instance;

    /// Describes the type; start from [`TypeInfo::new`].
    fn metadata() -> TypeInfo;

    /// Checks properties beyond what the schema says (ranges, paths, how
    /// properties combine). Every problem names its property.
    fn validate(properties: &Self::Properties) -> Result<(), Vec<Problem>> {
        let _ = properties;
        Ok(())
    }

    /// Opens the resource `name`. Must not bring anything online.
    fn open(name: &str, properties: Self::Properties) -> Result<Self::Instance, Error>;
}

/// One configured resource. The host never calls two methods at once, so
/// methods take `&mut self`.
pub trait Instance: 'static {
    /// Brings the resource online; succeeds if it already is.
    fn online(&mut self, context: &CallContext) -> Result<(), Error>;

    /// Takes the resource offline gracefully; succeeds if it already is.
    fn offline(&mut self, context: &CallContext) -> Result<(), Error>;

    /// Takes the resource offline at once, best effort. The host kills the
    /// processes the instance spawned afterwards in any case.
    fn terminate(&mut self) {}

    /// A cheap check run often.
    fn looks_alive(&mut self) -> bool;

    /// A thorough check run less often. By default, the same as
    /// [`Instance::looks_alive`].
    fn is_alive(&mut self, level: CheckLevel) -> Health {
        let _ = level;
        if self.looks_alive() { Health::alive("looks alive") } else { Health::dead("does not look alive") }
    }

    /// A type-specific operation. By default every code is unknown.
    fn control(&mut self, code: &str, input: &str) -> Result<String, Error> {
        let _ = input;
        Err(Error::InvalidConfig(format!("unknown control code `{code}`")))
    }

    /// A cluster event. Ignored by default.
    fn notify(&mut self, event: ClusterEvent) {
        let _ = event;
    }
}

impl Health {
    /// A healthy result with its reason.
    pub fn alive(reason: impl Into<String>) -> Self {
        Health { alive: true, reason: reason.into() }
    }

    /// An unhealthy result with its reason.
    pub fn dead(reason: impl Into<String>) -> Self {
        Health { alive: false, reason: reason.into() }
    }
}

impl Problem {
    /// A problem with `property`, saying what is wrong and what to do.
    pub fn new(property: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { property: property.into(), message: message.into() }
    }
}

/// Exports a [`ResourceType`] as the component's `resource-type` interface.
/// Call it once, at the root of the plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($resource_type:ty) => {
        struct __StewardPlugin;

        impl $crate::bindings::exports::steward::resource::resource_type::Guest for __StewardPlugin {
            type Instance = $crate::__private::InstanceAdapter<$resource_type>;

            fn metadata() -> $crate::TypeInfo {
                $crate::__private::install_panic_hook();
                <$resource_type as $crate::ResourceType>::metadata()
            }

            fn validate(
                properties: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<(), ::std::vec::Vec<$crate::Problem>> {
                $crate::__private::validate::<$resource_type>(&properties)
            }
        }

        $crate::bindings::export!(__StewardPlugin with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
pub mod __private {
    //! Glue that `export_plugin!` expands to; not part of the API.
    #![allow(missing_docs)]
    use core::cell::RefCell;

    pub use wit_bindgen;

    use crate::bindings::exports::steward::resource::resource_type::{self as wit, GuestInstance};
    use crate::{CallContext, CheckLevel, ClusterEvent, Error, Health, Instance, Problem, ResourceType};

    /// Sends a panic's message to the host's log (tagged with the resource)
    /// before the trap ends the call; stderr alone is easy to miss.
    pub fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let default_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                crate::host::log(crate::host::LogLevel::Error, &format!("plugin panicked: {info}"), &[]);
                default_hook(info);
            }));
        });
    }

    pub fn validate<T: ResourceType>(properties: &[(String, String)]) -> Result<(), Vec<Problem>> {
        install_panic_hook();
        let typed = crate::properties::parse::<T::Properties>(&T::metadata().properties, properties)?;
        T::validate(&typed)
    }

    /// Holds a plugin's instance behind the `&self` methods WIT resources get.
    pub struct InstanceAdapter<T: ResourceType> {
        instance: RefCell<T::Instance>,
    }

    impl<T: ResourceType> GuestInstance for InstanceAdapter<T> {
        fn open(name: String, properties: Vec<(String, String)>) -> Result<wit::Instance, Error> {
            install_panic_hook();
            let typed = crate::properties::parse::<T::Properties>(&T::metadata().properties, &properties)
                .map_err(|problems| Error::InvalidConfig(crate::properties::describe(&problems)))?;
            if let Err(problems) = T::validate(&typed) {
                return Err(Error::InvalidConfig(crate::properties::describe(&problems)));
            }
            let instance = T::open(&name, typed)?;
            Ok(wit::Instance::new(InstanceAdapter::<T> { instance: RefCell::new(instance) }))
        }

        fn online(&self, context: CallContext) -> Result<(), Error> {
            self.instance.borrow_mut().online(&context)
        }

        fn offline(&self, context: CallContext) -> Result<(), Error> {
            self.instance.borrow_mut().offline(&context)
        }

        fn terminate(&self) {
            self.instance.borrow_mut().terminate()
        }

        fn looks_alive(&self) -> bool {
            self.instance.borrow_mut().looks_alive()
        }

        fn is_alive(&self, level: CheckLevel) -> Health {
            self.instance.borrow_mut().is_alive(level)
        }

        fn control(&self, code: String, input: String) -> Result<String, Error> {
            self.instance.borrow_mut().control(&code, &input)
        }

        fn notify(&self, event: ClusterEvent) {
            self.instance.borrow_mut().notify(event)
        }
    }
}
