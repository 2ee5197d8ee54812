using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Server.Config;
using Modular.Server.Hosting;
using Modular.Server.Relay;
using Modular.Server.Store;
using Modular.Server.Stun;
using Serilog;

namespace Modular.Server.Tests;

/// <summary>A real modular-server (Kestrel, relay, STUN) on loopback with ephemeral ports and a temporary data dir.</summary>
internal sealed class TestServer : IAsyncDisposable
{
    private readonly List<GrpcChannel> _channels = [];
    private readonly List<X25519KeyPair> _agentKeys = [];
    private readonly bool _ownsDataDir;
    private bool _disposed;

    private TestServer(WebApplication app, ServerConfig config, bool ownsDataDir)
    {
        App = app;
        Config = config;
        _ownsDataDir = ownsDataDir;
        Address = ServerHost.GrpcAddress(app);
    }

    public WebApplication App { get; }

    public ServerConfig Config { get; }

    public Uri Address { get; }

    public IStore Store => App.Services.GetRequiredService<IStore>();

    public RelayServer Relay => App.Services.GetRequiredService<RelayServer>();

    public StunServer Stun => App.Services.GetRequiredService<StunServer>();

    public static string NewDataDir() => Path.Combine(Path.GetTempPath(), "modular-server-test-" + Guid.NewGuid().ToString("N")[..12]);

    public static async Task<TestServer> StartAsync(string? dataDir = null, Func<ServerConfig, ServerConfig>? tweak = null, Action<IServiceCollection>? services = null, TimeProvider? time = null)
    {
        var owns = dataDir is null;
        var config = new ServerConfig
        {
            Listen = "127.0.0.1:0",
            RelayListen = "127.0.0.1:0",
            StunListen = "127.0.0.1:0",
            DataDir = dataDir ?? NewDataDir(),
        };
        config = tweak?.Invoke(config) ?? config;
        var logger = new LoggerConfiguration().MinimumLevel.Warning().WriteTo.Console().CreateLogger();
        var app = await ServerHost.BuildAsync(config, logger, CancellationToken.None, services, time);
        await app.StartAsync();
        return new TestServer(app, config, owns);
    }

    public GrpcChannel Channel()
    {
        var channel = GrpcChannel.ForAddress(Address);
        _channels.Add(channel);
        return channel;
    }

    public async Task<string> CreateSetupKeyAsync(bool reusable = true, int usageLimit = 0)
        => (await Store.CreateSetupKeyAsync(new NewSetupKey("", reusable, usageLimit, null), CancellationToken.None)).PlainKey;

    /// <summary>A new agent identity with a management client.</summary>
    public (X25519KeyPair Key, ManagementClient Client) NewAgent()
    {
        var key = X25519KeyPair.Generate();
        return (key, new ManagementClient(Channel(), key));
    }

    /// <summary>A new agent registered with <paramref name="setupKey"/> as <paramref name="hostname"/>; its key lives as long as the server.</summary>
    public async Task<ManagementClient> RegisterAgentAsync(string setupKey, string hostname)
    {
        var (key, client) = NewAgent();
        _agentKeys.Add(key);
        await client.RegisterAsync(setupKey, Meta(hostname), CancellationToken.None);
        return client;
    }

    public static PeerMeta Meta(string hostname) => new() { Hostname = hostname, AgentVersion = "0.1.0-test", Os = "linux" };

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var channel in _channels)
        {
            channel.Dispose();
        }

        foreach (var key in _agentKeys)
        {
            key.Dispose();
        }

        await App.StopAsync();
        await App.DisposeAsync();
        if (_ownsDataDir)
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try
            {
                Directory.Delete(Config.DataDir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
