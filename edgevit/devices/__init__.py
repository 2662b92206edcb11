"""Device profiles (what a target is) — see ``profile.py`` and ``profiles/*.yaml``."""
from .profile import (BUILTIN_PROFILE_DIR, DeviceProfile, ProfileError, get_device, list_devices,
                      load_profile_file, load_profiles)

__all__ = ["BUILTIN_PROFILE_DIR", "DeviceProfile", "ProfileError", "get_device", "list_devices",
           "load_profile_file", "load_profiles"]
