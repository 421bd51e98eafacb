; Inno Setup script for the Windows installer of AstrAI (https://jrsoftware.org/isinfo.php).
; build_installer.py compiles it when iscc is on PATH:
;   iscc /DAppVersion=0.1.0 /DSourceDir=dist\AstrAI /DOutputDir=dist installer\windows\astrai.iss
; The installer copies the PyInstaller folder; user data stays in %APPDATA%\AstrAI (never removed here).

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\AstrAI"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif

[Setup]
AppId={{5B0D7C4E-3A51-4C57-9E55-A57A1A1B0001}
AppName=AstrAI
AppVersion={#AppVersion}
AppPublisher=AstrAI
DefaultDirName={autopf}\AstrAI
DefaultGroupName=AstrAI
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
OutputDir={#OutputDir}
OutputBaseFilename=AstrAI-{#AppVersion}-setup
Compression=lzma2/max
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
UninstallDisplayIcon={app}\AstrAI.exe
WizardStyle=modern

[Languages]
Name: "en"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\AstrAI"; Filename: "{app}\AstrAI.exe"
Name: "{autodesktop}\AstrAI"; Filename: "{app}\AstrAI.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\AstrAI.exe"; Description: "{cm:LaunchProgram,AstrAI}"; Flags: nowait postinstall skipifsilent
