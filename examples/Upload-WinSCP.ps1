<#
.SYNOPSIS
Upload one User Data file to an lcsync upload/ folder over explicit FTPS with the WinSCP .NET assembly,
retrying with backoff.

.DESCRIPTION
Needs WinSCP (https://winscp.net), which installs WinSCPnet.dll next to WinSCP.exe, and Windows PowerShell 5.1 or
PowerShell 7. Transfer resume and temporary ".filepart" names are turned off: lcsync refuses resumed uploads and
discards a broken upload, so every attempt sends the whole file and WinSCP only reports success once the server has
confirmed every byte.

Every setting can come from a parameter or from the environment:
  LCSYNC_HOST (127.0.0.1), LCSYNC_PORT (2121), LCSYNC_USER (demo), LCSYNC_PASSWORD (required unless the user is one
  of the demo accounts of the sample accounts.yaml), LCSYNC_CERT_FINGERPRINT (the server certificate's SHA-256
  fingerprint, as WinSCP shows it), LCSYNC_TRIES (5), LCSYNC_DELAY (10 seconds, doubled each time, at most 300).

Exit code: 0 on success; 1 when every attempt failed or the server refused for a reason a retry cannot fix (login
refused, file name not allowed, certificate not trusted). Not tested here: written against the WinSCP .NET
assembly documentation.

.EXAMPLE
$env:LCSYNC_PASSWORD = Read-Host "Password"   # or from your secret store; never in the script
.\Upload-WinSCP.ps1 -HostName ftp.example.com -Port 21 -UserName acme -File C:\exports\acme_users.csv `
    -CertificateFingerprint "a1:b2:...:ff"

.EXAMPLE
# The demo server started by `make run`, whose self-signed certificate is not checked:
.\Upload-WinSCP.ps1 -File .\demo_users.csv -Insecure
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$File,
    [string]$HostName = $(if ($env:LCSYNC_HOST) { $env:LCSYNC_HOST } else { "127.0.0.1" }),
    [int]$Port = $(if ($env:LCSYNC_PORT) { [int]$env:LCSYNC_PORT } else { 2121 }),
    [string]$UserName = $(if ($env:LCSYNC_USER) { $env:LCSYNC_USER } else { "demo" }),
    [string]$Password = $env:LCSYNC_PASSWORD,
    [string]$RemoteName,
    [string]$CertificateFingerprint = $env:LCSYNC_CERT_FINGERPRINT,
    [switch]$Insecure,
    [switch]$PlainFtp,
    [int]$Tries = $(if ($env:LCSYNC_TRIES) { [int]$env:LCSYNC_TRIES } else { 5 }),
    [int]$Delay = $(if ($env:LCSYNC_DELAY) { [int]$env:LCSYNC_DELAY } else { 10 }),
    [string]$WinSCPPath = "${env:ProgramFiles(x86)}\WinSCP\WinSCPnet.dll"
)
$ErrorActionPreference = "Stop"

function Write-Log([string]$Message) {
    Write-Host ("{0} Upload-WinSCP: {1}" -f (Get-Date -Format "yyyy-MM-ddTHH:mm:sszzz"), $Message)
}

$demoPasswords = @{ "demo-sandbox" = "demo-sandbox-2026"; "demo" = "demo-production-2026" }  # the documented demo only
if (-not $Password) {
    if ($demoPasswords.ContainsKey($UserName)) { $Password = $demoPasswords[$UserName] }
    else { Write-Error "Set LCSYNC_PASSWORD (or -Password) for user $UserName"; exit 2 }
}
if (-not (Test-Path -LiteralPath $File -PathType Leaf)) { Write-Error "Cannot read $File"; exit 2 }
$localPath = (Resolve-Path -LiteralPath $File).ProviderPath
if (-not $RemoteName) { $RemoteName = Split-Path -Leaf $localPath }

Add-Type -Path $WinSCPPath

$sessionOptions = New-Object WinSCP.SessionOptions -Property @{
    Protocol   = [WinSCP.Protocol]::Ftp
    HostName   = $HostName
    PortNumber = $Port
    UserName   = $UserName
    Password   = $Password
    FtpMode    = [WinSCP.FtpMode]::Passive
}
if (-not $PlainFtp) {
    $sessionOptions.FtpSecure = [WinSCP.FtpSecure]::Explicit   # AUTH TLS, then PBSZ 0 / PROT P
    $sessionOptions.AddRawSettings("MinTlsVersion", "12")       # TLS 1.2 or newer, as the server requires
    if ($CertificateFingerprint) { $sessionOptions.TlsHostCertificateFingerprint = $CertificateFingerprint }
    elseif ($Insecure) { $sessionOptions.GiveUpSecurityAndAcceptAnyTlsHostCertificate = $true }
}

$transferOptions = New-Object WinSCP.TransferOptions
$transferOptions.TransferMode = [WinSCP.TransferMode]::Binary
$transferOptions.ResumeSupport.State = [WinSCP.TransferResumeSupportState]::Off   # no .filepart, no resume

$remotePath = "/upload/" + [WinSCP.RemotePath]::EscapeOperationMask($RemoteName)
for ($attempt = 1; $attempt -le $Tries; $attempt++) {
    Write-Log "attempt $attempt of ${Tries}: $localPath -> ftp://${HostName}:${Port}$remotePath"
    $session = New-Object WinSCP.Session
    try {
        $session.Open($sessionOptions)
        $result = $session.PutFiles([WinSCP.RemotePath]::EscapeFileMask($localPath), $remotePath, $false, $transferOptions)
        $result.Check()   # throws when the server did not confirm the upload (e.g. 451 for an incomplete upload)
        Write-Log "done: the server confirmed the whole file"
        exit 0
    }
    catch {
        $message = $_.Exception.Message
        Write-Log "failed: $message"
        if ($message -match "530|Authentication failed|Access denied|553|File name not allowed|certificate") {
            Write-Log "a retry cannot fix this (login, file name or certificate); not retrying"
            Write-Log "(repeated failed logins get this address banned)"
            exit 1
        }
        if ($attempt -ge $Tries) { Write-Log "giving up after $attempt attempts"; exit 1 }
        Write-Log "the server keeps nothing of a broken upload; retrying in ${Delay}s"
        Start-Sleep -Seconds $Delay
        $Delay = [Math]::Min($Delay * 2, 300)
    }
    finally {
        $session.Dispose()
    }
}
exit 1
