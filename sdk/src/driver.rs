//! The [`Driver`] trait a plugin implements, and the adapter that exports it
//! as the WIT `driver` interface.

use std::marker::PhantomData;

use crate::bindings::exports::flexwasm::driver::driver::Guest;
use crate::bindings::flexwasm::driver::types::{DriverError, VolumeOptions};
use crate::{BlockPlan, Capabilities, DeviceLocator, Error, MountPlan, Options, Result};

/// A FlexVolume driver: one method per FlexVolume call.
///
/// Every method has a default: [`init`](Driver::init) reports kubelet's
/// default [`Capabilities`], all others answer [`Error::NotSupported`], which
/// makes kubelet fall back to its own behaviour for that call. Implement the
/// calls your storage needs.
///
/// The host runs one call per process and [`export_driver!`](crate::export_driver)
/// builds the driver with `Default::default()` for every call, so nothing
/// carries over between calls in memory; keep what later calls need in
/// [`state`](crate::state). Calls for different volumes run concurrently on a
/// node, and kubelet repeats calls: every method must be idempotent.
///
/// Paths are the ones kubelet passed; the host mounts only there.
pub trait Driver {
    /// `init`, at every (re)probe by kubelet and kube-controller-manager.
    fn init(&self) -> Result<Capabilities> {
        Ok(Capabilities::default())
    }

    /// `getvolumename`: a unique name for the volume (kubelet ignores it today).
    fn get_volume_name(&self, options: &Options) -> Result<String> {
        let _ = options;
        Err(Error::NotSupported)
    }

    /// `attach`, by the attach/detach controller: make the volume available
    /// to `node_name`. Returns the device path handed to
    /// [`wait_for_attach`](Driver::wait_for_attach).
    fn attach(&self, options: &Options, node_name: &str) -> Result<String> {
        let _ = (options, node_name);
        Err(Error::NotSupported)
    }

    /// `waitforattach`, by kubelet on the node: how to find the attached
    /// device there; the host waits for it and resolves it to a `/dev` path.
    fn wait_for_attach(&self, device: &str, options: &Options) -> Result<DeviceLocator> {
        let _ = (device, options);
        Err(Error::NotSupported)
    }

    /// `detach`, by the attach/detach controller. Gets only the PV or volume
    /// name, no options: remember what you need in [`state`](crate::state)
    /// at attach time.
    fn detach(&self, volume_name: &str, node_name: &str) -> Result<()> {
        let _ = (volume_name, node_name);
        Err(Error::NotSupported)
    }

    /// `isattached`, by the attach/detach controller, periodically.
    fn is_attached(&self, options: &Options, node_name: &str) -> Result<bool> {
        let _ = (options, node_name);
        Err(Error::NotSupported)
    }

    /// `mountdevice`: how to format (if blank) and mount `device`; the host
    /// does it at `device_mount_path`.
    fn mount_device(
        &self,
        device_mount_path: &str,
        device: &str,
        options: &Options,
    ) -> Result<BlockPlan> {
        let _ = (device_mount_path, device, options);
        Err(Error::NotSupported)
    }

    /// `unmountdevice`, after the host has unmounted `device_mount_path` (or
    /// found nothing mounted there): for the driver's own bookkeeping.
    fn unmount_device(&self, device_mount_path: &str) -> Result<()> {
        let _ = device_mount_path;
        Err(Error::NotSupported)
    }

    /// `mount`: what to mount at the pod volume dir. Not supported means
    /// kubelet bind-mounts the volume from its device mount path.
    fn mount(&self, pod_volume_dir: &str, options: &Options) -> Result<MountPlan> {
        let _ = (pod_volume_dir, options);
        Err(Error::NotSupported)
    }

    /// `unmount`, after the host has unmounted `pod_volume_dir`: for the
    /// driver's own bookkeeping. kubelet passes nothing but the directory:
    /// what it takes to clean up must have been recorded at
    /// [`mount`](Driver::mount) ([`mounts`](crate::mounts) keeps such records).
    fn unmount(&self, pod_volume_dir: &str) -> Result<()> {
        let _ = pod_volume_dir;
        Err(Error::NotSupported)
    }

    /// `expandvolume`, by kube-controller-manager: grow the volume in the
    /// backend to `new_size` bytes.
    fn expand_volume(
        &self,
        options: &Options,
        device_mount_path: &str,
        new_size: u64,
        old_size: u64,
    ) -> Result<()> {
        let _ = (options, device_mount_path, new_size, old_size);
        Err(Error::NotSupported)
    }

    /// `expandfs`, by kubelet: make the grown device visible on this node;
    /// on success the host grows the filesystem at `device_mount_path`.
    fn expand_fs(
        &self,
        options: &Options,
        device_path: &str,
        device_mount_path: &str,
        new_size: u64,
        old_size: u64,
    ) -> Result<()> {
        let _ = (options, device_path, device_mount_path, new_size, old_size);
        Err(Error::NotSupported)
    }
}

/// Implements the generated WIT `Guest` trait for any [`Driver`]; used by
/// [`export_driver!`](crate::export_driver), not meant to be named by plugins.
#[doc(hidden)]
pub struct Adapter<D>(PhantomData<fn() -> D>);

impl<D: Driver + Default> Guest for Adapter<D> {
    fn init() -> Result<Capabilities, DriverError> {
        Ok(D::default().init()?)
    }

    fn get_volume_name(options: VolumeOptions) -> Result<String, DriverError> {
        Ok(D::default().get_volume_name(&options.into())?)
    }

    fn attach(options: VolumeOptions, node_name: String) -> Result<String, DriverError> {
        Ok(D::default().attach(&options.into(), &node_name)?)
    }

    fn wait_for_attach(
        device: String,
        options: VolumeOptions,
    ) -> Result<DeviceLocator, DriverError> {
        Ok(D::default().wait_for_attach(&device, &options.into())?)
    }

    fn detach(volume_name: String, node_name: String) -> Result<(), DriverError> {
        Ok(D::default().detach(&volume_name, &node_name)?)
    }

    fn is_attached(options: VolumeOptions, node_name: String) -> Result<bool, DriverError> {
        Ok(D::default().is_attached(&options.into(), &node_name)?)
    }

    fn mount_device(
        device_mount_path: String,
        device: String,
        options: VolumeOptions,
    ) -> Result<BlockPlan, DriverError> {
        Ok(D::default().mount_device(&device_mount_path, &device, &options.into())?)
    }

    fn unmount_device(device_mount_path: String) -> Result<(), DriverError> {
        Ok(D::default().unmount_device(&device_mount_path)?)
    }

    fn mount(pod_volume_dir: String, options: VolumeOptions) -> Result<MountPlan, DriverError> {
        Ok(D::default().mount(&pod_volume_dir, &options.into())?)
    }

    fn unmount(pod_volume_dir: String) -> Result<(), DriverError> {
        Ok(D::default().unmount(&pod_volume_dir)?)
    }

    fn expand_volume(
        options: VolumeOptions,
        device_mount_path: String,
        new_size: u64,
        old_size: u64,
    ) -> Result<(), DriverError> {
        Ok(D::default().expand_volume(&options.into(), &device_mount_path, new_size, old_size)?)
    }

    fn expand_fs(
        options: VolumeOptions,
        device_path: String,
        device_mount_path: String,
        new_size: u64,
        old_size: u64,
    ) -> Result<(), DriverError> {
        Ok(D::default().expand_fs(
            &options.into(),
            &device_path,
            &device_mount_path,
            new_size,
            old_size,
        )?)
    }
}

/// Exports a [`Driver`] as the plugin's WIT `driver` interface. Invoke it
/// once, at the root of the plugin crate, with a type that implements
/// [`Driver`] and `Default`:
///
/// ```no_run
/// #[derive(Default)]
/// struct MyDriver;
///
/// impl flexwasm_sdk::Driver for MyDriver {}
///
/// flexwasm_sdk::export_driver!(MyDriver);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_driver {
    ($driver:ty) => {
        const _: () = {
            // A readable error when the type does not qualify, instead of one
            // about the generated `Guest` trait.
            fn assert_is_a_driver<D: $crate::Driver + ::core::default::Default>() {}
            let _ = assert_is_a_driver::<$driver>;
        };
        const _: () = {
            // The generated export macro names the implementing type with an
            // identifier, so the adapter gets one.
            #[doc(hidden)]
            type __FlexwasmExport = $crate::Adapter<$driver>;
            $crate::bindings::__export_plugin_world!(__FlexwasmExport);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Unimplemented;
    impl Driver for Unimplemented {}

    #[derive(Default)]
    struct Failing;
    impl Driver for Failing {
        fn unmount(&self, pod_volume_dir: &str) -> Result<()> {
            Err(Error::failure(format!("cannot clean up {pod_volume_dir}")))
        }
        fn get_volume_name(&self, options: &Options) -> Result<String> {
            Ok(options.volume_name.to_uppercase())
        }
    }

    fn options(volume_name: &str) -> VolumeOptions {
        VolumeOptions {
            fs_type: None,
            read_only: false,
            volume_name: volume_name.into(),
            pod: None,
            fs_group: None,
            secrets: Vec::new(),
            extra: Vec::new(),
        }
    }

    #[test]
    fn defaults_report_kubelet_capabilities_and_not_supported() {
        type Exported = Adapter<Unimplemented>;
        assert_eq!(Exported::init(), Ok(Capabilities::default()));
        assert_eq!(
            Exported::get_volume_name(options("v")),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::attach(options("v"), "n".into()),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::wait_for_attach("/dev/x".into(), options("v")),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::detach("v".into(), "n".into()),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::is_attached(options("v"), "n".into()),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::mount_device("/m".into(), "/dev/x".into(), options("v")),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::unmount_device("/m".into()),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::mount("/p".into(), options("v")),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::unmount("/p".into()),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::expand_volume(options("v"), "/m".into(), 2, 1),
            Err(DriverError::NotSupported)
        );
        assert_eq!(
            Exported::expand_fs(options("v"), "/dev/x".into(), "/m".into(), 2, 1),
            Err(DriverError::NotSupported)
        );
    }

    #[test]
    fn adapter_passes_arguments_and_errors_through() {
        type Exported = Adapter<Failing>;
        assert_eq!(
            Exported::get_volume_name(options("pv-a")),
            Ok("PV-A".into())
        );
        assert_eq!(
            Exported::unmount("/pods/x".into()),
            Err(DriverError::Failure("cannot clean up /pods/x".into()))
        );
    }
}
