<#
.SYNOPSIS
Upload one User Data file to an lcsync upload/ folder with .NET's FtpWebRequest (no extra software),
retrying with backoff.

.DESCRIPTION
Uses System.Net.FtpWebRequest, built into Windows PowerShell 5.1 and PowerShell 7, with EnableSsl for explicit FTPS
(AUTH TLS, PBSZ 0, PROT P) and passive mode.

KNOWN LIMITATION WITH FTPS: as far as we can tell from the .NET source, FtpWebRequest closes a TLS data connection
without sending a TLS close_notify. lcsync counts an upload only when every byte arrived, and treats a TLS data
connection closed without close_notify as cut off: it discards the file and answers 451. Expect FtpWebRequest
uploads over FTPS (-Tls, which production accounts require) to be refused that way; this has not been tried on
Windows here. For FTPS from Windows use Upload-WinSCP.ps1, or upload.py with Python. Without -Tls this script works
against a sandbox account that allows plain FTP. Microsoft also marks WebRequest (and so FtpWebRequest) obsolete
in .NET 6 and later.

Every setting can come from a parameter or from the environment:
  LCSYNC_HOST (127.0.0.1), LCSYNC_PORT (2121), LCSYNC_USER (demo-sandbox), LCSYNC_PASSWORD (required unless the
  user is one of the demo accounts of the sample accounts.yaml), LCSYNC_TLS=1, LCSYNC_INSECURE=1, LCSYNC_TRIES (5),
  LCSYNC_DELAY (10 seconds, doubled each time, at most 300).

Exit code: 0 when the server confirmed the upload (226); 1 when every attempt failed or the server refused for a
reason a retry cannot fix (login refused, file name not allowed); 2 on a usage error.

.EXAMPLE
.\upload-powershell.ps1 -File .\demo_users.csv
(the demo sandbox account over plain FTP, on the server started by `make run`)

.EXAMPLE
$env:LCSYNC_PASSWORD = Read-Host "Password"
.\upload-powershell.ps1 -HostName ftp.example.com -Port 21 -UserName acme-sandbox -File C:\exports\acme_users.csv -Tls
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$File,
    [string]$HostName = $(if ($env:LCSYNC_HOST) { $env:LCSYNC_HOST } else { "127.0.0.1" }),
    [int]$Port = $(if ($env:LCSYNC_PORT) { [int]$env:LCSYNC_PORT } else { 2121 }),
    [string]$UserName = $(if ($env:LCSYNC_USER) { $env:LCSYNC_USER } else { "demo-sandbox" }),
    [string]$Password = $env:LCSYNC_PASSWORD,
    [string]$RemoteName,
    [switch]$Tls = ($env:LCSYNC_TLS -eq "1"),
    [switch]$Insecure = ($env:LCSYNC_INSECURE -eq "1"),
    [int]$Tries = $(if ($env:LCSYNC_TRIES) { [int]$env:LCSYNC_TRIES } else { 5 }),
    [int]$Delay = $(if ($env:LCSYNC_DELAY) { [int]$env:LCSYNC_DELAY } else { 10 })
)
$ErrorActionPreference = "Stop"

function Write-Log([string]$Message) {
    Write-Host ("{0} upload-powershell: {1}" -f (Get-Date -Format "yyyy-MM-ddTHH:mm:sszzz"), $Message)
}

$demoPasswords = @{ "demo-sandbox" = "demo-sandbox-2026"; "demo" = "demo-production-2026" }  # the documented demo only
if (-not $Password) {
    if ($demoPasswords.ContainsKey($UserName)) { $Password = $demoPasswords[$UserName] }
    else { Write-Error "Set LCSYNC_PASSWORD (or -Password) for user $UserName"; exit 2 }
}
if (-not (Test-Path -LiteralPath $File -PathType Leaf)) { Write-Error "Cannot read $File"; exit 2 }
$localPath = (Resolve-Path -LiteralPath $File).ProviderPath
if (-not $RemoteName) { $RemoteName = Split-Path -Leaf $localPath }

# Windows PowerShell 5.1 may not offer TLS 1.2 by default; the server accepts TLS 1.2 and newer only.
[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12 -bor [Net.ServicePointManager]::SecurityProtocol
if ($Insecure) {
    # Accept the demo's self-signed certificate. Never for a real server: install its CA certificate instead.
    [Net.ServicePointManager]::ServerCertificateValidationCallback = { $true }
}

$uri = "ftp://${HostName}:${Port}/upload/" + [Uri]::EscapeDataString($RemoteName)
for ($attempt = 1; $attempt -le $Tries; $attempt++) {
    Write-Log "attempt $attempt of ${Tries}: $localPath -> $uri"
    try {
        $request = [Net.FtpWebRequest]::Create($uri)
        $request.Method = [Net.WebRequestMethods+Ftp]::UploadFile
        $request.Credentials = New-Object Net.NetworkCredential($UserName, $Password)
        $request.EnableSsl = [bool]$Tls
        $request.UsePassive = $true
        $request.UseBinary = $true
        $request.KeepAlive = $false
        $request.Timeout = 60000
        $request.ReadWriteTimeout = 120000

        $fileStream = [IO.File]::OpenRead($localPath)
        try {
            $requestStream = $request.GetRequestStream()
            try { $fileStream.CopyTo($requestStream) } finally { $requestStream.Close() }
        }
        finally { $fileStream.Close() }

        # GetResponse waits for the server's final reply: 226 when every byte arrived, an error (451) otherwise.
        $response = $request.GetResponse()
        Write-Log ("server: {0}" -f $response.StatusDescription.Trim())
        $response.Close()
        exit 0
    }
    catch {
        $exception = $_.Exception
        while ($exception.InnerException -and -not ($exception -is [Net.WebException])) { $exception = $exception.InnerException }
        $code = $null
        if ($exception -is [Net.WebException] -and $exception.Response -is [Net.FtpWebResponse]) {
            $code = $exception.Response.StatusCode
        }
        Write-Log "failed: $($_.Exception.Message)"
        if ($code -eq [Net.FtpStatusCode]::NotLoggedIn -or
            $code -eq [Net.FtpStatusCode]::ActionNotTakenFileUnavailable -or
            $code -eq [Net.FtpStatusCode]::ActionNotTakenFilenameNotAllowed) {
            Write-Log "the server refused ($code); a retry cannot fix this; not retrying"
            Write-Log "(repeated failed logins get this address banned)"
            exit 1
        }
        if ($attempt -ge $Tries) { Write-Log "giving up after $attempt attempts"; exit 1 }
        Write-Log "the server keeps nothing of a broken upload; retrying in ${Delay}s"
        Start-Sleep -Seconds $Delay
        $Delay = [Math]::Min($Delay * 2, 300)
    }
}
exit 1
