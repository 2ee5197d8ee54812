using System.Composition;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Security;

namespace Modular.Plugins.Rosenpass;

/// <summary>
/// The "rosenpass" PSK provider's factory. It publishes this agent's static key (made once, kept in state_dir) through
/// the host's key directory, so peers see that it runs Rosenpass, and decides each peer's PSK (<see cref="RosenpassProvider"/>).
/// Between Rosenpass peers the post-quantum exchange (<see cref="CryptoServerExchange"/>) replaces the seed PSK.
/// </summary>
[Export(typeof(IPresharedKeyProviderFactory))]
[PluginName("rosenpass")]
public sealed class RosenpassProviderFactory : IPresharedKeyProviderFactory
{
    public string Description =>
        "Rosenpass PSKs: the post-quantum exchange's key between Rosenpass peers (a seed PSK until the first exchange), permissive/strict for the others.";

    public ValueTask<IPresharedKeyProvider> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var logger = context.LoggerFactory.CreateLogger<RosenpassProvider>();
        var listen = ListenEndpoint(context.Settings);
        var stateDirectory = context.StateDirectory;
        var identity = new Lazy<StaticKeyPair>(() => StaticKeyPair.LoadOrCreate(stateDirectory, StaticKeyPair.GenerateMcEliece460896));
        var timings = TestTimings(Environment.GetEnvironmentVariable(RekeySecondsVariable));
        if (timings is not null)
        {
            logger.LogWarning("Rosenpass: {Variable} is set: keys rotate every {Rekey} s (a test hook, not for production)", RekeySecondsVariable, timings.RekeyAfterTimeResponder.TotalSeconds);
        }

        var exchange = new CryptoServerExchange(identity, context.Time, timings);
        IRosenpassTransport? transport = null;
        string? problem = null;
        if (listen is null)
        {
            // Without an address the key is not published either: peers see no Rosenpass here (a strict one refuses us).
            problem = $"no exchange address (settings address={context.Settings.GetValueOrDefault("address")}, port={context.Settings.GetValueOrDefault("port")}); the exchange does not run";
        }
        else
        {
            try
            {
                transport = new UdpRosenpassTransport(listen);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                problem = $"cannot listen on {listen} ({e.Message}); peers keep the seed PSK";
            }
        }

        if (problem is not null)
        {
            // Status shows it too (IPresharedKeyProviderStatus): Rosenpass not available, with this reason.
            logger.LogWarning("Rosenpass: {Problem}", problem);
        }

        var provider = new RosenpassProvider(exchange, transport, context.RosenpassKeys, context.Time, logger) { Problem = problem };
        provider.Start(() => identity.Value, listen?.ToString());
        return ValueTask.FromResult<IPresharedKeyProvider>(provider);
    }

    /// <summary>
    /// TEST HOOK ONLY: the environment variable that shortens every protocol timer so a key rotates every N seconds
    /// instead of upstream's 120 (the rotation test uses 8). Unset (always, outside tests) means upstream's timers.
    /// </summary>
    internal const string RekeySecondsVariable = "MODULAR_ROSENPASS_REKEY_SECONDS";

    /// <summary>The timers for <see cref="RekeySecondsVariable"/>'s value: upstream's scaled so the responder rekeys after that many seconds; null when unset or not a positive number.</summary>
    internal static Protocol.CryptoServerTimings? TestTimings(string? rekeySeconds)
        => double.TryParse(rekeySeconds, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds > 0 && double.IsFinite(seconds)
            ? Protocol.CryptoServerTimings.Default.ScaledBy(seconds / Protocol.CryptoServerTimings.Default.RekeyAfterTimeResponder.TotalSeconds)
            : null;

    /// <summary>Where the exchange listens: <c>address</c> (the host passes the overlay address) and <c>port</c> (<c>[rosenpass] port</c>).</summary>
    internal static IPEndPoint? ListenEndpoint(IReadOnlyDictionary<string, object?> settings)
    {
        if (settings.GetValueOrDefault("address") is not string text || !IPAddress.TryParse(text, out var address))
        {
            return null;
        }

        var port = settings.GetValueOrDefault("port") switch
        {
            long value => value,
            string value when long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) => parsed,
            _ => 9999,
        };
        return port is > 0 and <= 65535 ? new IPEndPoint(address, (int)port) : null;
    }
}
