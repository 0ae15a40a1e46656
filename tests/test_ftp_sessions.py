"""Login, listing, upload, download and delete with real clients, over FTP and again over FTPS."""

from __future__ import annotations

import ftplib
from collections.abc import Iterator

import pytest
from serving import Running, connect, download, need, run, running, sha256, upload, user_data, wait_for

from core.config import Config


@pytest.fixture
def server(config: Config) -> Iterator[Running]:
    with running(config) as live:
        yield live


class TestPlain:
    tls = False
    env = "sandbox"

    def login(self, server: Running, client: str = "acme") -> ftplib.FTP:
        return connect(server, client, self.env, tls=self.tls)

    def test_home_holds_exactly_the_three_folders(self, server: Running) -> None:
        ftp = self.login(server)
        assert sorted(ftp.nlst()) == ["reports", "results", "upload"]
        assert ftp.pwd() == "/"
        ftp.quit()

    def test_upload_is_stored_whole_and_queued_once(self, server: Running) -> None:
        data = user_data(2000)
        ftp = self.login(server)
        assert upload(ftp, "upload/acme_users.csv", data).startswith("226")
        assert ftp.nlst("upload") == ["upload/acme_users.csv"] or ftp.nlst("upload") == ["acme_users.csv"]
        assert ftp.size("upload/acme_users.csv") == len(data)
        ftp.quit()
        jobs = wait_for(lambda: server.jobs(self.env), what="an import job")
        assert len(jobs) == 1
        job = jobs[0]
        assert (job.client, job.filename, job.size, job.status, job.received_via) == (
            "acme", "acme_users.csv", len(data), "queued", "ftp",
        )  # fmt: skip
        spooled = server.service.layout.absolute(job.spool_path).read_bytes()
        assert sha256(spooled) == sha256(data)

    def test_follow_up_commands_after_upload_succeed(self, server: Running) -> None:
        data = user_data(10)
        ftp = self.login(server)
        upload(ftp, "upload/acme_users.csv", data)
        ftp.voidcmd("TYPE A")  # SIZE must answer in ASCII mode too, as WinSCP and scripts ask it
        assert ftp.size("upload/acme_users.csv") == len(data)
        assert ftp.sendcmd("MFMT 20261127235900 upload/acme_users.csv").startswith("213")
        assert ftp.sendcmd("MDTM upload/acme_users.csv") == "213 20261127235900"
        listing: list[str] = []
        ftp.retrlines("LIST upload", listing.append)
        assert len(listing) == 1 and listing[0].startswith("-r--r--r--") and listing[0].endswith("acme_users.csv")
        facts = list(ftp.mlsd("upload"))
        assert [name for name, _ in facts] == ["acme_users.csv"]
        ftp.quit()

    def test_reports_can_be_downloaded_and_deleted(self, server: Running) -> None:
        report = server.home(self.env) / "reports" / "compliance_report_20261128_000500.csv"
        payload = b"employee_id,course\r\n000123,Fire safety\r\n" * 5000
        report.write_bytes(payload)
        ftp = self.login(server)
        assert ftp.nlst("reports") in (
            ["compliance_report_20261128_000500.csv"],
            ["reports/compliance_report_20261128_000500.csv"],
        )
        assert sha256(download(ftp, "reports/compliance_report_20261128_000500.csv")) == sha256(payload)
        assert ftp.delete("reports/compliance_report_20261128_000500.csv").startswith("250")
        assert not report.exists()
        ftp.quit()

    def test_results_can_be_downloaded_and_deleted(self, server: Running) -> None:
        result = server.home(self.env) / "results" / "acme_users_20261128_000012.results.csv"
        result.write_bytes(b"line,key,outcome\r\n")
        ftp = self.login(server)
        assert download(ftp, "results/acme_users_20261128_000012.results.csv") == b"line,key,outcome\r\n"
        ftp.delete("results/acme_users_20261128_000012.results.csv")
        assert not result.exists()
        ftp.quit()

    def test_temporary_name_then_rename_queues_the_final_name(self, server: Running) -> None:
        data = user_data(30)
        ftp = self.login(server)
        upload(ftp, "upload/acme_users.csv.filepart", data)
        assert server.jobs(self.env) == []  # a temporary name is never queued
        assert ftp.rename("upload/acme_users.csv.filepart", "upload/acme_users.csv").startswith("250")
        ftp.quit()
        jobs = wait_for(lambda: server.jobs(self.env), what="the renamed upload's job")
        assert [job.filename for job in jobs] == ["acme_users.csv"]
        assert sha256(server.service.layout.absolute(jobs[0].spool_path).read_bytes()) == sha256(data)

    def test_new_upload_of_same_name_never_alters_the_queued_copy(self, server: Running) -> None:
        first, second = user_data(20, "a"), user_data(25, "b")
        ftp = self.login(server)
        upload(ftp, "upload/acme_users.csv", first)
        upload(ftp, "upload/acme_users.csv", second)
        assert ftp.size("upload/acme_users.csv") == len(second)
        ftp.quit()
        jobs = wait_for(lambda: len(server.jobs(self.env)) == 2 and server.jobs(self.env), what="two jobs")
        contents = [server.service.layout.absolute(job.spool_path).read_bytes() for job in jobs]
        assert contents == [first, second]

    def test_clients_and_environments_never_see_each_other(self, server: Running) -> None:
        ftp = self.login(server, "globex")
        upload(ftp, "upload/globex_users.csv", user_data(5))
        ftp.quit()
        other_env = "production" if self.env == "sandbox" else "sandbox"
        assert not (server.home(self.env, "acme") / "upload" / "globex_users.csv").exists()
        assert not (server.home(other_env, "globex") / "upload" / "globex_users.csv").exists()
        ftp = self.login(server, "acme")
        assert ftp.nlst("upload") == []
        for path in ("../globex/upload", f"/../../{other_env}/acme/upload", "../../globex"):
            with pytest.raises(ftplib.error_perm):
                ftp.cwd(path)
                ftp.cwd("/")
                ftp.nlst(path)
                raise ftplib.error_perm("550 listed the same home")
        ftp.quit()


class TestTls(TestPlain):
    """The same suite over explicit FTPS (AUTH TLS, PBSZ 0, PROT P), on the production accounts."""

    tls = True
    env = "production"


def test_curl_uploads_lists_downloads_and_deletes_over_ftps(server: Running, tmp_path) -> None:  # type: ignore[no-untyped-def]
    need("curl")
    data = user_data(500)
    source = tmp_path / "acme_users.csv"
    source.write_bytes(data)
    base = f"ftp://{server.host}:{server.port}"
    auth = ["--user", "acme:acme-production-secret", "--ssl-reqd", "-k", "-sS"]
    done = run(["curl", *auth, "-T", str(source), f"{base}/upload/"])
    assert done.returncode == 0, done.stderr
    listing = run(["curl", *auth, "--list-only", f"{base}/upload/"])
    assert listing.stdout.split() == ["acme_users.csv"]
    (server.home("production") / "reports" / "r_20261128_000500.csv").write_bytes(data)
    target = tmp_path / "r.csv"
    got = run(["curl", *auth, "-o", str(target), f"{base}/reports/r_20261128_000500.csv"])
    assert got.returncode == 0, got.stderr
    assert sha256(target.read_bytes()) == sha256(data)
    deleted = run(["curl", *auth, f"{base}/", "-Q", "DELE reports/r_20261128_000500.csv"])
    assert deleted.returncode == 0, deleted.stderr
    assert not (server.home("production") / "reports" / "r_20261128_000500.csv").exists()
    jobs = wait_for(lambda: server.jobs("production"), what="curl's upload to be queued")
    assert jobs[0].size == len(data)


def test_curl_plain_ftp_to_sandbox(server: Running, tmp_path) -> None:  # type: ignore[no-untyped-def]
    need("curl")
    source = tmp_path / "acme_users.csv"
    source.write_bytes(user_data(100))
    done = run(["curl", "-sS", "--user", "acme-sandbox:acme-sandbox-secret", "-T", str(source),
                f"ftp://{server.host}:{server.port}/upload/"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: server.jobs("sandbox"), what="curl's plain upload")


@pytest.mark.parametrize("env,user", [("production", "acme"), ("sandbox", "acme-sandbox")])
def test_lftp_uploads_and_lists_over_ftps(server: Running, tmp_path, env: str, user: str) -> None:  # type: ignore[no-untyped-def]
    need("lftp")
    data = user_data(800)
    source = tmp_path / "acme_users.csv"
    source.write_bytes(data)
    password = {"production": "acme-production-secret", "sandbox": "acme-sandbox-secret"}[env]
    script = (
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no; "
        f"put {source} -o upload/acme_users.csv; ls upload; bye"
    )
    done = run(["lftp", "-u", f"{user},{password}", "-e", script, f"ftp://{server.host}:{server.port}"])
    assert done.returncode == 0, done.stderr
    assert "acme_users.csv" in done.stdout
    jobs = wait_for(lambda: server.jobs(env), what="lftp's upload")
    assert sha256(server.service.layout.absolute(jobs[0].spool_path).read_bytes()) == sha256(data)
