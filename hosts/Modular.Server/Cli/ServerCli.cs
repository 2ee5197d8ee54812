using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Modular.Abstractions.Config;
using Modular.Server.Config;
using Modular.Server.Hosting;
using Modular.Server.Store;
using Serilog;
using Serilog.Events;

namespace Modular.Server.Cli;

/// <summary>
/// `modular-server`: runs the control plane, and administers the same store (setup keys, peers) — also
/// while the server runs: SQLite WAL lets both write, and the server picks changes up within a second.
/// </summary>
public static class ServerCli
{
    public const string DefaultConfigPath = "/etc/modular/server.toml";

    internal static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static RootCommand Build()
    {
        var config = new Option<string>("--config", "-c")
        {
            Description = "server.toml (default: $MODULAR_CONFIG, else /etc/modular/server.toml)",
            Recursive = true,
        };
        var root = new RootCommand("Modular control plane: management, signal, relay and STUN.") { config };
        root.SetAction((parse, ct) => RunServerAsync(parse.GetValue(config), ct));

        var reusable = new Option<bool>("--reusable") { Description = "Usable by many peers (unlimited unless --usage-limit)" };
        var usageLimit = new Option<int>("--usage-limit") { Description = "How many registrations the key allows (implies --reusable when above 1)" };
        var expires = new Option<string>("--expires") { Description = "Lifetime, e.g. 24h, 7d; default: never" };
        var name = new Option<string>("--name") { Description = "A name to recognise the key by" };
        var create = new Command("create", "Create a setup key and print it (shown once)") { reusable, usageLimit, expires, name };
        create.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), async (store, _) =>
        {
            var limit = parse.GetValue(usageLimit);
            if (limit < 0)
            {
                return Fail("--usage-limit cannot be negative");
            }

            TimeSpan? lifetime = null;
            if (parse.GetValue(expires) is { Length: > 0 } text)
            {
                if (!ConfigDuration.TryParse(text, out var d) || d <= TimeSpan.Zero)
                {
                    return Fail($"--expires: expected a duration such as 24h or 7d, got '{text}'");
                }

                lifetime = d;
            }

            var (record, plain) = await store.CreateSetupKeyAsync(new NewSetupKey(parse.GetValue(name) ?? "", parse.GetValue(reusable), limit, lifetime), ct);
            Console.Out.WriteLine(plain);
            Console.Error.WriteLine($"setup key {record.Id} '{record.Name}': {Describe(record)}. It is shown only now; store it safely.");
            return 0;
        }, ct));

        var jsonKeys = new Option<bool>("--json") { Description = "Print JSON" };
        var listKeys = new Command("list", "List setup keys (never the keys themselves)") { jsonKeys };
        listKeys.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), async (store, _) =>
        {
            var keys = await store.ListSetupKeysAsync(ct);
            var now = DateTimeOffset.UtcNow;
            if (parse.GetValue(jsonKeys))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(
                    keys.Select(k => new { k.Id, k.Name, k.Reusable, k.UsageLimit, k.UsedCount, State = k.State(now), CreatedAt = Iso(k.CreatedAt), ExpiresAt = Iso(k.ExpiresAt), LastUsedAt = Iso(k.LastUsedAt) }),
                    Json));
                return 0;
            }

            Console.Out.WriteLine($"{"ID",-13} {"NAME",-20} {"STATE",-10} {"USED",-9} {"EXPIRES",-20}");
            foreach (var k in keys)
            {
                var used = k.UsageLimit > 0 ? $"{k.UsedCount}/{k.UsageLimit}" : $"{k.UsedCount}/∞";
                Console.Out.WriteLine($"{k.Id,-13} {k.Name,-20} {k.State(now),-10} {used,-9} {Iso(k.ExpiresAt) ?? "never",-20}");
            }

            return 0;
        }, ct));

        var revokeTarget = new Argument<string>("key") { Description = "Setup key id or name" };
        var revoke = new Command("revoke", "Revoke a setup key") { revokeTarget };
        revoke.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), async (store, _) =>
            await store.RevokeSetupKeyAsync(parse.GetValue(revokeTarget)!, ct) ? 0 : Fail($"no setup key with id or name '{parse.GetValue(revokeTarget)}'"), ct));

        var jsonPeers = new Option<bool>("--json") { Description = "Print JSON" };
        var listPeers = new Command("list", "List registered peers") { jsonPeers };
        listPeers.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), async (store, cfg) =>
        {
            var peers = await store.ListPeersAsync(ct);
            var now = DateTimeOffset.UtcNow;
            if (parse.GetValue(jsonPeers))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(
                    peers.Select(p => new
                    {
                        p.Id,
                        Name = p.Hostname,
                        Fqdn = $"{p.DnsLabel}.{cfg.Account.DnsDomain}",
                        Ip = p.OverlayAddress.ToString(),
                        PublicKey = p.PublicKey.ToBase64(),
                        p.AgentVersion,
                        p.Os,
                        RegisteredAt = Iso(p.RegisteredAt),
                        LastSeen = Iso(p.LastSeen),
                        LoginExpiresAt = Iso(p.LoginExpiresAt),
                        Expired = p.IsExpired(now),
                    }),
                    Json));
                return 0;
            }

            Console.Out.WriteLine($"{"NAME",-24} {"IP",-15} {"PUBLIC KEY",-45} {"LAST SEEN",-20}");
            foreach (var p in peers)
            {
                Console.Out.WriteLine($"{p.Hostname,-24} {p.OverlayAddress,-15} {p.PublicKey.ToBase64(),-45} {Iso(p.LastSeen),-20}{(p.IsExpired(now) ? " (expired)" : "")}");
            }

            return 0;
        }, ct));

        var removeTarget = new Argument<string>("peer") { Description = "Peer name, overlay IP or public key" };
        var remove = new Command("remove", "Remove a peer; every other peer's map drops it on the next sync") { removeTarget };
        remove.SetAction((parse, ct) => WithStoreAsync(parse.GetValue(config), async (store, _) =>
        {
            var removed = await store.RemovePeersAsync(parse.GetValue(removeTarget)!, ct);
            if (removed.Count == 0)
            {
                return Fail($"no peer matches '{parse.GetValue(removeTarget)}'");
            }

            foreach (var p in removed)
            {
                Console.Out.WriteLine($"removed {p.Hostname} {p.OverlayAddress} {p.PublicKey.ToBase64()}");
            }

            return 0;
        }, ct));

        root.Add(new Command("setup-key", "Manage setup keys") { create, listKeys, revoke });
        root.Add(new Command("peers", "Manage peers") { listPeers, remove });
        Networks.NetworkCommands.AddTo(root, config);
        Networks.DnsCommands.AddTo(root, config);
        return root;
    }

    private static ServerConfig LoadConfig(string? path)
    {
        path ??= Environment.GetEnvironmentVariable("MODULAR_CONFIG");
        if (string.IsNullOrEmpty(path))
        {
            return File.Exists(DefaultConfigPath) ? ServerConfigLoader.LoadFile(DefaultConfigPath) : new ServerConfig();
        }

        return ServerConfigLoader.LoadFile(path);
    }

    internal static async Task<int> WithStoreAsync(string? configPath, Func<IStore, ServerConfig, Task<int>> action, CancellationToken ct)
    {
        try
        {
            var config = LoadConfig(configPath);
            await using var store = await ServerHost.OpenStoreAsync(config, ct);
            return await action(store, config);
        }
        catch (ConfigException e)
        {
            return Fail(e.Message);
        }
        catch (Networks.NetworkValidationException e)
        {
            return Fail(e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Microsoft.Data.Sqlite.SqliteException or InvalidOperationException)
        {
            return Fail(e.Message);
        }
    }

    private static async Task<int> RunServerAsync(string? configPath, CancellationToken ct)
    {
        ServerConfig config;
        try
        {
            config = LoadConfig(configPath);
        }
        catch (ConfigException e)
        {
            return Fail(e.Message);
        }

        var logger = new LoggerConfiguration()
            .MinimumLevel.Information()
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .MinimumLevel.Override("Grpc", LogEventLevel.Warning)
            .WriteTo.Console(formatProvider: CultureInfo.InvariantCulture)
            .CreateLogger();
        try
        {
            await using var app = await ServerHost.BuildAsync(config, logger, ct);
            await app.StartAsync(ct);
            logger.Information("modular-server listening on {Address} ({Scheme}); components: {Components}; data in {DataDir}",
                ServerHost.GrpcAddress(app), config.Tls.Enabled ? "TLS" : "plaintext", string.Join(", ", config.Components), config.DataDir);
            await app.WaitForShutdownAsync(ct);
            return 0;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            logger.Fatal("modular-server could not start: {Message}", e.Message);
            return 1;
        }
        finally
        {
            await logger.DisposeAsync();
        }
    }

    private static string Describe(SetupKeyRecord k) =>
        (k.Reusable ? k.UsageLimit > 0 ? $"reusable, {k.UsageLimit} uses" : "reusable, unlimited uses" : "one-off")
        + (k.ExpiresAt is { } e ? $", expires {Iso(e)}" : ", never expires");

    internal static string? Iso(DateTimeOffset? t) => t?.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);

    internal static int Fail(string message)
    {
        Console.Error.WriteLine($"modular-server: {message}");
        return 2;
    }
}
