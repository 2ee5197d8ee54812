using Modular.Server.Config;
using Modular.Server.Hosting;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace Modular.Server.Tests;

/// <summary>
/// Every key of <see cref="NotBuiltYet.Keys"/>, one case each (a row deleted when its feature is built takes its case
/// with it): the server warns in its start log, citing file:line:col and the key, and starts anyway.
/// </summary>
public sealed class NotBuiltYetTests
{
    // A fact over the rows, not a theory: the table is empty now (account.rosenpass left with issue 15), and a theory
    // without data fails. It checks each row again once one is added.
    [Fact]
    public async Task An_accepted_key_that_is_not_built_is_a_warning_in_the_start_log()
    {
        Assert.DoesNotContain(NotBuiltYet.Keys, row => row.Key.StartsWith("account.rosenpass", StringComparison.Ordinal));
        foreach (var row in NotBuiltYet.Keys)
        {
            await WarnsAsync(row);
        }
    }

    private static async Task WarnsAsync(NotBuiltYet.Row row)
    {
        var dataDir = TestServer.NewDataDir();
        var text = $"""
            listen = "127.0.0.1:0"
            data_dir = "{dataDir}"
            relay = {"{"} listen = "127.0.0.1:0" {"}"}
            stun = {"{"} listen = "127.0.0.1:0" {"}"}
            {row.Example}
            """;
        var config = ServerConfigLoader.Parse(text, "server.toml");
        var firstLine = Array.IndexOf(text.Split('\n'), row.Example.Split('\n')[0]) + 1;
        var log = new LogLines();
        var logger = new LoggerConfiguration().WriteTo.Sink(log).CreateLogger();
        try
        {
            await using (var app = await ServerHost.BuildAsync(config, logger, CancellationToken.None))
            {
                await app.StartAsync();
                await app.StopAsync();
            }

            Assert.Matches($@"\[Warning\] server\.toml:{firstLine}:\d+: {System.Text.RegularExpressions.Regex.Escape(row.Key)}: accepted, but {System.Text.RegularExpressions.Regex.Escape(row.Reason)}; {System.Text.RegularExpressions.Regex.Escape(row.Effect)}", log.ToString());
        }
        finally
        {
            await logger.DisposeAsync();
            Directory.Delete(dataDir, recursive: true);
        }
    }

    [Fact]
    public async Task A_config_without_those_keys_starts_without_a_warning()
    {
        var dataDir = TestServer.NewDataDir();
        var config = ServerConfigLoader.Parse($"listen = \"127.0.0.1:0\"\ndata_dir = \"{dataDir}\"\ncomponents = [\"management\", \"signal\"]\nredis_url = \"\"\n", "server.toml");
        var log = new LogLines();
        var logger = new LoggerConfiguration().WriteTo.Sink(log).CreateLogger();
        try
        {
            await using (var app = await ServerHost.BuildAsync(config, logger, CancellationToken.None))
            {
                await app.StartAsync();
                await app.StopAsync();
            }

            Assert.DoesNotContain("accepted, but", log.ToString(), StringComparison.Ordinal);
        }
        finally
        {
            await logger.DisposeAsync();
            Directory.Delete(dataDir, recursive: true);
        }
    }

    /// <summary>The start log as "[Level] message" lines.</summary>
    private sealed class LogLines : ILogEventSink
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _lines = new();

        public void Emit(LogEvent logEvent) => _lines.Enqueue($"[{logEvent.Level}] {logEvent.RenderMessage(System.Globalization.CultureInfo.InvariantCulture)}");

        public override string ToString() => string.Join('\n', _lines);
    }
}
