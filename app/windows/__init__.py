"""The app's windows, widgets and dialogs."""
