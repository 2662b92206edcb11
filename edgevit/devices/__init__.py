"""Device profiles (what a target is): the schema in ``profile.py``, the data in ``profiles/*.yaml``.

How edgevit reaches a device (adb, a serial line) is ``edgevit.links``; what runs over it, ``edgevit.profiling``.
"""
from .profile import (
    BUILTIN_PROFILE_DIR,
    DeviceProfile,
    ProfileError,
    get_device,
    host_facts,
    list_devices,
    load_profile_file,
    load_profiles,
)

__all__ = ["BUILTIN_PROFILE_DIR", "DeviceProfile", "ProfileError", "get_device", "host_facts", "list_devices",
           "load_profile_file", "load_profiles"]
