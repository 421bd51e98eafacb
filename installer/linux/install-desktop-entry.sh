#!/bin/sh
# Add AstrAI to the application menu: writes ~/.local/share/applications/astrai.desktop pointing at
# this folder (run it again after moving the folder). Remove that file to take the entry away.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
mkdir -p "$apps"
sed "s|@APPDIR@|$here|g" "$here/astrai.desktop" > "$apps/astrai.desktop.tmp"
mv "$apps/astrai.desktop.tmp" "$apps/astrai.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" || true
echo "installed $apps/astrai.desktop"
