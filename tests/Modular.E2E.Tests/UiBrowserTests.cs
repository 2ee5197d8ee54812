using Microsoft.Playwright;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// The local UI in a real browser: Debian's chromium, headless, driven by Playwright (its .NET driver and the node
/// driver in its NuGet package; no browser download). Three agents in namespaces; u1's UI listens on loopback in u1's
/// namespace, so chromium runs there (a wrapper script puts it in with `ip netns exec`; Playwright talks to it over a
/// pipe). The page's own script does the work: what it shows is what `status -d` shows, its switch changes the agent.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class UiBrowserTests(ITestOutputHelper output)
{
    private const string Chromium = "/usr/bin/chromium";
    private static readonly TimeSpan Registered = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public async Task The_ui_shows_each_peer_switches_lazy_connections_keeps_it_across_a_restart_and_greys_it_out_when_pinned()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.Require(File.Exists(Chromium), $"needs Debian's chromium at {Chromium} (scripts/setup installs it)");
        using var rig = new MeshRig(output, "wb");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["u1", "u2", "u3"];

        // u2 and u3 are lazy (Idle towards each other); u1 starts eager, so it connects to both and they wake on its offer.
        // Once u1 turns lazy in the UI, its quiet peers go Idle after 5 s and tell the other side (GO_IDLE).
        rig.AddAgent("u1").WriteConfig(key, "[features]\ninactivity_timeout = \"5s\"\n[ui]\nlisten = \"127.0.0.1:9091\"");
        rig.AddAgent("u2").WriteConfig(key, "[features]\nlazy_connections = true\ninactivity_timeout = \"5s\"");
        rig.AddAgent("u3").WriteConfig(key, "[features]\nlazy_connections = true\ninactivity_timeout = \"5s\"");
        foreach (var name in names)
        {
            rig[name].Start();
        }

        rig.WaitUntil(() => rig["u1"].IsConnected("u2") && rig["u1"].IsConnected("u3"), Registered, "u1 Connected to u2 and u3", () => MeshTests.Diagnostics(rig, names));

        var wrapper = Path.Combine(rig.Root, "chromium-in-u1");
        File.WriteAllText(wrapper, $"#!/bin/sh\nexec ip netns exec {rig["u1"].Namespace.Name} {Chromium} \"$@\"\n");
        File.SetUnixFileMode(wrapper, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        Assertions.SetDefaultExpectTimeout(15_000);
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = wrapper, Headless = true, Args = ["--no-sandbox"] });
        try
        {
            // Signed in as the README says: `modular ui` prints a one-time link; opening it leads to the page.
            var page = await SignInAsync(browser, rig["u1"]);
            await ExpectPeerAsync(page, "u2", "Connected");
            await ExpectPeerAsync(page, "u3", "Connected");
            var u2 = Peer(page, "u2");
            await Assertions.Expect(u2.Locator("td.state")).ToHaveTextAsync("Connected");
            await Assertions.Expect(u2).ToContainTextAsync("P2P");
            await Assertions.Expect(u2).ToContainTextAsync(" received, ");
            // Every per-peer field of `status -d` is a column; the rest of it (routes, DNS, firewall, flows) a row.
            foreach (var column in new[] { "State", "Connection", "Last handshake", "Transfer", "Latency", "Quantum resistance" })
            {
                await Assertions.Expect(page.Locator("#peer-head th", new() { HasTextString = column }).First).ToBeVisibleAsync();
            }

            foreach (var row in new[] { "Lazy connections", "Firewall", "DNS", "Flow logging", "Quantum resistance", "Peers" })
            {
                await Assertions.Expect(page.Locator("#status th", new() { HasTextString = row }).First).ToBeVisibleAsync();
            }

            await Assertions.Expect(StatusRow(page, "Lazy connections")).ToContainTextAsync("off");
            await Assertions.Expect(page.Locator("#lazy")).Not.ToBeCheckedAsync();
            await Assertions.Expect(page.Locator("#lazy")).ToBeEnabledAsync();

            // The switch, clicked: lazy connections on at once, and the quiet peers go Idle on the page.
            await page.Locator("#lazy").CheckAsync();
            await Assertions.Expect(page.Locator("#lazy-source")).ToHaveTextAsync("(set by ui)");
            await Assertions.Expect(StatusRow(page, "Lazy connections")).ToContainTextAsync("on (idle after 5s)");
            await ExpectPeerAsync(page, "u2", "Idle");
            await ExpectPeerAsync(page, "u3", "Idle");
            await Assertions.Expect(Peer(page, "u2").Locator("td.state")).ToContainTextAsync("lazy");
            Assert.Equal("Idle", rig["u1"].Peer("u2")?.GetProperty("state").GetString()); // the CLI agrees with the page

            // A restarted daemon keeps the choice (sessions do not survive it: sign in again).
            rig["u1"].Stop();
            rig["u1"].Start();
            page = await SignInAsync(browser, rig["u1"]);
            await Assertions.Expect(page.Locator("#lazy")).ToBeCheckedAsync();
            await Assertions.Expect(page.Locator("#lazy")).ToBeEnabledAsync();
            await ExpectPeerAsync(page, "u2", "Idle");
            await ExpectPeerAsync(page, "u3", "Idle");

            // Off again from the page: the parked peers connect.
            await page.Locator("#lazy").UncheckAsync();
            await Assertions.Expect(StatusRow(page, "Lazy connections")).ToContainTextAsync("off");
            await ExpectPeerAsync(page, "u2", "Connected");
            await ExpectPeerAsync(page, "u3", "Connected");

            // Pinned by the variable: the page shows the switch on, greyed out, and says who set it.
            rig["u1"].Stop();
            rig["u1"].Start(new Dictionary<string, string> { ["NB_ENABLE_EXPERIMENTAL_LAZY_CONN"] = "true" });
            page = await SignInAsync(browser, rig["u1"]);
            await Assertions.Expect(page.Locator("#lazy")).ToBeDisabledAsync();
            await Assertions.Expect(page.Locator("#lazy")).ToBeCheckedAsync();
            await Assertions.Expect(page.Locator("#lazy-source")).ToContainTextAsync("NB_ENABLE_EXPERIMENTAL_LAZY_CONN");
        }
        catch
        {
            output.WriteLine(MeshTests.Diagnostics(rig, names));
            throw;
        }
    }

    /// <summary>Asks the daemon for a sign-in link (`modular ui`) and opens it in a new browser context (a fresh cookie jar).</summary>
    private async Task<IPage> SignInAsync(IBrowser browser, MeshRig.Agent agent)
    {
        string? link = null;
        agent.Namespace.WaitForTcpListener(9091, TimeSpan.FromSeconds(30));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (link is null && DateTime.UtcNow < deadline)
        {
            var ui = Shell.TryRun(MeshRig.AgentBinary, $"ui --socket {agent.Socket}", TimeSpan.FromSeconds(20));
            link = ui.ExitCode == 0 ? ui.Output.Trim() : null;
            if (link is null)
            {
                await Task.Delay(500); // the daemon's socket is not up yet
            }
        }

        Assert.True(link is not null, "`modular ui` gave no sign-in link");
        Assert.StartsWith("http://127.0.0.1:9091/login?token=", link, StringComparison.Ordinal);
        var context = await browser.NewContextAsync();
        var page = await context.NewPageAsync();
        page.SetDefaultTimeout(45_000);
        var reply = await page.GotoAsync(link);
        Assert.True(reply is { Ok: true }, $"the sign-in link answered {reply?.Status}");
        Assert.EndsWith(":9091/", page.Url, StringComparison.Ordinal); // redirected to the page; the token left the address bar
        return page;
    }

    private static ILocator Peer(IPage page, string name) => page.Locator($"#peers tr[data-peer^=\"{name}.\"]");

    private static ILocator StatusRow(IPage page, string label) => page.Locator("#status tr", new() { Has = page.Locator("th", new() { HasTextString = label }) }).First;

    private static Task ExpectPeerAsync(IPage page, string name, string state)
        => Assertions.Expect(Peer(page, name)).ToHaveAttributeAsync("data-state", state, new() { Timeout = 45_000 });
}
