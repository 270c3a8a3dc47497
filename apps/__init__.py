"""Example scbus apps: each module shows one pattern. See README, "Writing an app"."""
