using System.Text.Json;
using Modular.Agent.Daemon;
using Modular.Abstractions.WireGuard;

namespace Modular.Agent.Tests;

/// <summary>The agent's identity on disk and the secrets that must never reach a log.</summary>
public sealed class SecretsAndKeysTests : IDisposable
{
    private readonly AgentHarness _agent = new();

    [Fact]
    public void Up_creates_a_0600_key_in_a_0700_state_dir_and_never_logs_the_setup_key_or_private_key()
    {
        const string setupKey = "A1B2C3D4-SETUP-KEY-SENTINEL-7e1f";
        var daemon = _agent.StartDaemon(_agent.WriteConfig(setupKey: setupKey));

        var keyPath = Path.Combine(_agent.StateDir, "private.key");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyPath));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(_agent.StateDir));
        var privateKey = WgKey.Parse(File.ReadAllText(keyPath).Trim());

        var status = AgentHarness.Run($"status --json --socket {_agent.SocketPath}");
        using var json = JsonDocument.Parse(status.Output);
        Assert.Equal(PrivateKeyFile.PublicKeyOf(privateKey).ToBase64(), json.RootElement.GetProperty("public_key").GetString());

        Assert.Equal(0, AgentHarness.Run($"down --socket {_agent.SocketPath}").ExitCode);
        Assert.Equal(0, AgentHarness.WaitForExit(daemon));

        var everything = AgentHarness.WaitForOutput(daemon, "modular stopped") + string.Concat(Directory.GetFiles(Path.GetDirectoryName(_agent.LogFile)!).Select(File.ReadAllText));
        Assert.Contains("setup key: (hidden)", everything, StringComparison.Ordinal);
        Assert.DoesNotContain(setupKey, everything, StringComparison.Ordinal);
        Assert.DoesNotContain(privateKey.ToBase64(), everything, StringComparison.Ordinal);
        Assert.DoesNotContain(privateKey.ToHex(), everything, StringComparison.Ordinal);
    }

    [Fact]
    public void The_key_survives_a_restart()
    {
        var config = _agent.WriteConfig();
        var first = _agent.StartDaemon(config);
        var before = File.ReadAllText(Path.Combine(_agent.StateDir, "private.key"));
        Assert.Equal(0, AgentHarness.Run($"down --socket {_agent.SocketPath}").ExitCode);
        AgentHarness.WaitForExit(first);

        _agent.StartDaemon(config);

        Assert.Equal(before, File.ReadAllText(Path.Combine(_agent.StateDir, "private.key")));
    }

    [Fact]
    public void A_corrupt_key_file_stops_start_up_with_a_clear_error()
    {
        Directory.CreateDirectory(_agent.StateDir);
        File.WriteAllText(Path.Combine(_agent.StateDir, "private.key"), "not a key\n");

        var up = AgentHarness.Run($"up --config {_agent.WriteConfig()} --socket {_agent.SocketPath}");

        Assert.Equal(1, up.ExitCode);
        Assert.Contains("private.key: not a WireGuard private key", up.Error, StringComparison.Ordinal);
        Assert.False(File.Exists(_agent.SocketPath));
    }

    [Fact]
    public void Generated_keys_are_clamped_x25519_scalars_and_differ()
    {
        var a = PrivateKeyFile.Generate().ToArray();
        var b = PrivateKeyFile.Generate().ToArray();

        Assert.NotEqual(a, b);
        foreach (var key in new[] { a, b })
        {
            Assert.Equal(0, key[0] & 7);
            Assert.Equal(0, key[31] & 128);
            Assert.Equal(64, key[31] & 64);
        }
    }

    [Fact]
    public void Public_key_matches_the_rfc7748_vector()
    {
        // RFC 7748 section 6.1, Alice.
        var privateKey = WgKey.FromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");

        Assert.Equal("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", PrivateKeyFile.PublicKeyOf(privateKey).ToHex());
    }

    [Fact]
    public void An_existing_key_readable_by_others_is_tightened_to_0600()
    {
        var first = PrivateKeyFile.LoadOrCreate(_agent.StateDir);
        var path = Path.Combine(_agent.StateDir, "private.key");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);

        var again = PrivateKeyFile.LoadOrCreate(_agent.StateDir);

        Assert.True(first.Created);
        Assert.False(again.Created);
        Assert.Equal(first.PublicKey, again.PublicKey);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
    }

    public void Dispose() => _agent.Dispose();
}
