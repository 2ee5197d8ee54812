using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Modular.Agent.Ui;
using Modular.Testing;

namespace Modular.Agent.Tests;

/// <summary>
/// The local web UI of a real daemon: signing in with `modular ui`, status, the lazy-connections switch (kept across a
/// restart) and its guards. <see cref="_http"/> is a browser that signs in the documented way (<see cref="SignInAsync"/>).
/// </summary>
public sealed class LocalUiTests : IDisposable
{
    private readonly AgentHarness _agent = new();
    private readonly int _port = FreeLoopbackPort();
    private readonly CookieContainer _cookies = new();
    private readonly HttpClient _http;

    public LocalUiTests() => _http = new HttpClient(new HttpClientHandler { CookieContainer = _cookies }) { Timeout = TimeSpan.FromSeconds(20) };

    private string Ui => $"127.0.0.1:{_port}";

    [Fact]
    public async Task The_ui_shows_status_and_switches_lazy_connections_for_good()
    {
        var config = _agent.WriteConfig(interfaceName: "mdtui0", extra: "[features]\nlazy_connections = false\n", ui: Ui);
        var daemon = StartWithUi(config);
        await SignInAsync();

        var page = await _http.GetStringAsync($"http://{Ui}/");
        Assert.Contains("Lazy connections", page, StringComparison.Ordinal);
        using (var status = JsonDocument.Parse(await _http.GetStringAsync($"http://{Ui}/api/status")))
        {
            Assert.False(status.RootElement.GetProperty("features").GetProperty("lazy_connections").GetBoolean());
            Assert.Equal("mdtui0", status.RootElement.GetProperty("interface").GetProperty("name").GetString());
            var ui = status.RootElement.GetProperty("ui");
            Assert.True(ui.GetProperty("serving").GetBoolean());
            Assert.Equal(Ui, ui.GetProperty("listen").GetString());
            Assert.Equal(JsonValueKind.Null, ui.GetProperty("warning").ValueKind);
        }

        Assert.Matches($@"UI:\s+on, http://{System.Text.RegularExpressions.Regex.Escape(Ui)}/", AgentHarness.Run($"status --socket {_agent.SocketPath}").Output);

        using (var reply = await PutAsync("{\"lazy_connections\": true}"))
        {
            Assert.Equal(HttpStatusCode.OK, reply.StatusCode);
            using var settings = JsonDocument.Parse(await reply.Content.ReadAsStringAsync());
            Assert.True(settings.RootElement.GetProperty("lazy_connections").GetBoolean());
            Assert.Equal("ui", settings.RootElement.GetProperty("source").GetString());
        }

        Assert.True(LazyInCliStatus());
        var saved = Path.Combine(_agent.StateDir, "ui-settings.json");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(saved));
        Assert.Contains("lazy connections switched on", AgentHarness.WaitForOutput(daemon, "lazy connections switched on"), StringComparison.Ordinal);

        // The choice outlives the daemon: the file says off, the UI said on.
        Assert.Equal(0, AgentHarness.Run($"down --socket {_agent.SocketPath}").ExitCode);
        Assert.Equal(0, AgentHarness.WaitForExit(daemon));
        StartWithUi(config);
        Assert.True(LazyInCliStatus());
        await SignInAsync(); // sessions live as long as the daemon

        using (var reply = await PutAsync("{\"lazy_connections\": false}"))
        {
            Assert.Equal(HttpStatusCode.OK, reply.StatusCode);
        }

        Assert.False(LazyInCliStatus());
    }

    [Fact]
    public async Task The_ui_view_is_what_status_d_prints_and_the_page_sets_it_as_text_only()
    {
        StartWithUi(_agent.WriteConfig(interfaceName: "mdtui6", ui: Ui));
        await SignInAsync();

        // /api/view holds the rows of `status -d`, worded as the CLI words them: every "Label: value" line is a row.
        var text = AgentHarness.Run($"status -d --socket {_agent.SocketPath}");
        Assert.Equal(0, text.ExitCode);
        using var view = JsonDocument.Parse(await _http.GetStringAsync($"http://{Ui}/api/view"));
        var rows = view.RootElement.GetProperty("rows").EnumerateArray()
            .Select(r => (Label: r.GetProperty("label").GetString(), Value: r.GetProperty("value").GetString()!)).ToList();
        foreach (var label in new[] { "Interface", "Lazy connections", "Quantum resistance", "Flow logging", "Firewall", "DNS", "Peers" })
        {
            var row = Assert.Single(rows, r => r.Label == label);
            Assert.Contains($"{label}:", text.Output, StringComparison.Ordinal);
            Assert.Contains(row.Value, text.Output, StringComparison.Ordinal);
        }

        Assert.Contains(rows, r => r.Label == "Interface" && r.Value.StartsWith("mdtui6 (", StringComparison.Ordinal));
        Assert.Equal(JsonValueKind.Array, view.RootElement.GetProperty("peers").ValueKind);

        // The page's script puts values in as text: nothing the agent reports can become markup.
        var page = await _http.GetStringAsync($"http://{Ui}/");
        Assert.Contains("/api/view", page, StringComparison.Ordinal);
        foreach (var sink in new[] { "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(" })
        {
            Assert.DoesNotContain(sink, page, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Requests_not_from_the_ui_itself_change_nothing()
    {
        StartWithUi(_agent.WriteConfig(interfaceName: "mdtui1", ui: Ui));
        await SignInAsync(); // signed in: the guards below are about where a request comes from

        // DNS rebinding: a name other than the UI's own.
        using (var rebound = new HttpRequestMessage(HttpMethod.Get, $"http://{Ui}/api/status"))
        {
            rebound.Headers.Host = $"attacker.example:{_port}";
            using var reply = await _http.SendAsync(rebound);
            Assert.Equal(HttpStatusCode.Forbidden, reply.StatusCode);
        }

        // A cross-site page: its origin, or a form's content type.
        using (var crossSite = await PutAsync("{\"lazy_connections\": true}", origin: "http://attacker.example"))
        {
            Assert.Equal(HttpStatusCode.Forbidden, crossSite.StatusCode);
        }

        using (var form = await PutAsync("lazy_connections=true", contentType: "application/x-www-form-urlencoded"))
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, form.StatusCode);
        }

        foreach (var body in new[] { "{", "[]", "{\"lazy_connections\": \"yes\"}", "{\"other\": true}" })
        {
            using var bad = await PutAsync(body);
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
            Assert.Contains("lazy_connections", await bad.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.False(LazyInCliStatus());
        Assert.False(File.Exists(Path.Combine(_agent.StateDir, "ui-settings.json")));
    }

    [Fact]
    public async Task The_command_line_flag_wins_over_the_ui()
    {
        StartWithUi(_agent.WriteConfig(interfaceName: "mdtui2", ui: Ui), "--enable-lazy-connection");
        await SignInAsync();

        using var reply = await PutAsync("{\"lazy_connections\": false}");
        Assert.Equal(HttpStatusCode.Conflict, reply.StatusCode);
        Assert.Contains("--enable-lazy-connection", await reply.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        using var settings = JsonDocument.Parse(await _http.GetStringAsync($"http://{Ui}/api/settings"));
        Assert.False(settings.RootElement.GetProperty("editable").GetBoolean());
        Assert.True(LazyInCliStatus());
    }

    [Fact]
    public void A_taken_ui_port_is_a_warning_and_the_agent_runs_but_a_non_loopback_address_is_refused_at_its_key()
    {
        using var squatter = new TcpListener(IPAddress.Loopback, _port);
        squatter.Start();
        var daemon = _agent.StartDaemon(_agent.WriteConfig(interfaceName: "mdtui3", ui: Ui));
        Assert.Contains("Local UI not started", AgentHarness.WaitForOutput(daemon, "Local UI not started"), StringComparison.Ordinal);
        var text = AgentHarness.Run($"status --socket {_agent.SocketPath}");
        Assert.Equal(0, text.ExitCode);
        Assert.Matches($@"UI:\s+not serving: {System.Text.RegularExpressions.Regex.Escape(Ui)} is taken by another program", text.Output);
        using (var status = JsonDocument.Parse(AgentHarness.Run($"status --json --socket {_agent.SocketPath}").Output))
        {
            var ui = status.RootElement.GetProperty("ui");
            Assert.False(ui.GetProperty("serving").GetBoolean());
            Assert.Equal(Ui, ui.GetProperty("listen").GetString());
            Assert.Equal($"{Ui} is taken by another program: set [ui] listen to a free loopback address and port, or \"\" to turn the UI off",
                ui.GetProperty("warning").GetString());
        }

        Assert.Equal(0, AgentHarness.Run($"down --socket {_agent.SocketPath}").ExitCode);
        Assert.Equal(0, AgentHarness.WaitForExit(daemon));

        // The loader refuses it (as `config check` does), so the UI cannot be left silently off.
        var openConfig = _agent.WriteConfig(interfaceName: "mdtui3", ui: "0.0.0.0:9091", fileName: "open.toml");
        var open = AgentHarness.Run($"up --config {openConfig} --socket {_agent.SocketPath}", TimeSpan.FromSeconds(30));
        Assert.Equal(1, open.ExitCode);
        Assert.Matches($@"{System.Text.RegularExpressions.Regex.Escape(openConfig)}:\d+:\d+: ui.listen: expected a loopback address", open.Error);
    }

    [Fact]
    public async Task Item12_without_signing_in_status_settings_and_the_switch_are_refused()
    {
        StartWithUi(_agent.WriteConfig(interfaceName: "mdtui4", ui: Ui));

        foreach (var path in new[] { "/", "/api/status", "/api/view", "/api/settings" })
        {
            using var reply = await _http.GetAsync($"http://{Ui}{path}");
            Assert.Equal(HttpStatusCode.Unauthorized, reply.StatusCode);
            var body = await reply.Content.ReadAsStringAsync();
            Assert.Contains("modular ui", body, StringComparison.Ordinal);
            Assert.DoesNotContain("mdtui4", body, StringComparison.Ordinal); // nothing of the status leaks
        }

        // A cookie that no sign-in set is no better.
        _cookies.Add(new Uri($"http://{Ui}/"), new Cookie("modular_ui", "made-up-session"));
        using (var toggle = await PutAsync("{\"lazy_connections\": true}"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, toggle.StatusCode);
        }

        Assert.False(LazyInCliStatus());
        Assert.False(File.Exists(Path.Combine(_agent.StateDir, "ui-settings.json")));
    }

    [Fact]
    public async Task Item12_the_sign_in_link_works_once_and_sets_an_http_only_same_site_strict_cookie()
    {
        var daemon = StartWithUi(_agent.WriteConfig(interfaceName: "mdtui5", ui: Ui));
        var link = SignInLink();
        Assert.StartsWith($"http://{Ui}/login?token=", link, StringComparison.Ordinal);

        using var browser = new HttpClient(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false }) { Timeout = TimeSpan.FromSeconds(20) };
        using (var first = await browser.GetAsync(link))
        {
            Assert.Equal(HttpStatusCode.Redirect, first.StatusCode);
            Assert.Equal("/", first.Headers.Location?.OriginalString);
            var cookie = Assert.Single(first.Headers.GetValues("Set-Cookie"));
            Assert.StartsWith("modular_ui=", cookie, StringComparison.Ordinal);
            Assert.Contains("httponly", cookie, StringComparison.OrdinalIgnoreCase);
            Assert.Contains("samesite=strict", cookie, StringComparison.OrdinalIgnoreCase);

            // The cookie opens the UI.
            using var status = new HttpRequestMessage(HttpMethod.Get, $"http://{Ui}/api/status");
            status.Headers.Add("Cookie", cookie.Split(';')[0]);
            using var signedIn = await browser.SendAsync(status);
            Assert.Equal(HttpStatusCode.OK, signedIn.StatusCode);
            Assert.Contains("mdtui5", await signedIn.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // Used: the same link again, or a made-up one, signs nobody in.
        foreach (var again in new[] { link, $"http://{Ui}/login?token=guessed", $"http://{Ui}/login" })
        {
            using var reply = await browser.GetAsync(again);
            Assert.Equal(HttpStatusCode.Unauthorized, reply.StatusCode);
            Assert.False(reply.Headers.Contains("Set-Cookie"));
        }

        // `--help` says how a browser gets in.
        Assert.Contains("one-time link", AgentHarness.Run("--help").Output, StringComparison.Ordinal);

        // The token is the CLI user's alone: the daemon's log says a link was issued, never the link.
        var token = link[(link.IndexOf("token=", StringComparison.Ordinal) + "token=".Length)..];
        var log = AgentHarness.WaitForOutput(daemon, "a browser signed in");
        Assert.Contains("sign-in link issued", log, StringComparison.Ordinal);
        Assert.DoesNotContain(token, log, StringComparison.Ordinal);
    }

    [Fact]
    public void Item12_a_sign_in_token_expires_after_a_minute_and_a_session_after_twelve_hours()
    {
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.Parse("2026-12-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var logins = new UiLogins(clock);
        var late = logins.IssueToken();
        var onTime = logins.IssueToken();
        clock.Advance(UiLogins.TokenLifetime - TimeSpan.FromSeconds(1));
        var session = logins.Redeem(onTime);
        Assert.NotNull(session);
        Assert.Null(logins.Redeem(onTime));
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Null(logins.Redeem(late));
        Assert.True(logins.IsSignedIn(session));
        Assert.False(logins.IsSignedIn(late));
        clock.Advance(UiLogins.SessionLifetime);
        Assert.False(logins.IsSignedIn(session));
    }

    /// <summary>Signs <see cref="_http"/> in as the README says: the link `modular ui` prints, opened once.</summary>
    private async Task SignInAsync()
    {
        using var reply = await _http.GetAsync(SignInLink());
        Assert.Equal(HttpStatusCode.OK, reply.StatusCode); // the redirect to the page, now signed in
    }

    private string SignInLink()
    {
        var ui = AgentHarness.Run($"ui --socket {_agent.SocketPath}");
        Assert.True(ui.ExitCode == 0, ui.Error);
        return ui.Output.Trim();
    }

    private Shell.BackgroundProcess StartWithUi(string config, string? arguments = null)
    {
        var daemon = _agent.StartDaemon(config, arguments);
        var output = AgentHarness.WaitForOutput(daemon, "Local UI on");
        Assert.True(output.Contains("Local UI on", StringComparison.Ordinal), $"the UI did not start:\n{output}");
        return daemon;
    }

    private async Task<HttpResponseMessage> PutAsync(string body, string contentType = "application/json", string? origin = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, $"http://{Ui}/api/settings")
        {
            Content = new StringContent(body, Encoding.UTF8, contentType),
        };
        if (origin is not null)
        {
            request.Headers.Add("Origin", origin);
        }

        return await _http.SendAsync(request);
    }

    private bool LazyInCliStatus()
    {
        var status = AgentHarness.Run($"status --json --socket {_agent.SocketPath}");
        Assert.Equal(0, status.ExitCode);
        using var json = JsonDocument.Parse(status.Output);
        return json.RootElement.GetProperty("features").GetProperty("lazy_connections").GetBoolean();
    }

    private static int FreeLoopbackPort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    public void Dispose()
    {
        _http.Dispose();
        _agent.Dispose();
    }
}
