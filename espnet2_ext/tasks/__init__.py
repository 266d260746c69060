"""ESPnet task classes that build this project's components from their own registries."""
