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
/// The post-quantum exchange itself is not plugged in yet (<see cref="CreateExchange"/>): Rosenpass peers use the seed PSK.
/// </summary>
[Export(typeof(IPresharedKeyProviderFactory))]
[PluginName("rosenpass")]
public sealed class RosenpassProviderFactory : IPresharedKeyProviderFactory
{
    public string Description =>
        "Rosenpass PSKs: seed PSK between Rosenpass peers, permissive/strict for the others; the post-quantum exchange itself is not plugged in yet.";

    public ValueTask<IPresharedKeyProvider> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var logger = context.LoggerFactory.CreateLogger<RosenpassProvider>();
        var listen = ListenEndpoint(context.Settings);
        var stateDirectory = context.StateDirectory;
        var identity = new Lazy<StaticKeyPair>(() => StaticKeyPair.LoadOrCreate(stateDirectory, StaticKeyPair.GenerateMcEliece460896));
        var exchange = CreateExchange(identity);
        IRosenpassTransport? transport = null;
        if (exchange is not null && listen is not null)
        {
            try
            {
                transport = new UdpRosenpassTransport(listen);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                logger.LogWarning("Rosenpass: cannot listen on {Listen} ({Problem}); peers keep the seed PSK", listen, e.Message);
            }
        }

        var provider = new RosenpassProvider(exchange, transport, context.RosenpassKeys, context.Time, logger);
        provider.Start(() => identity.Value, listen?.ToString());
        return ValueTask.FromResult<IPresharedKeyProvider>(provider);
    }

    /// <summary>
    /// The protocol engine for this agent's keys; null until the protocol library's CryptoServer is adapted to
    /// <see cref="IKeyExchange"/> (TODO at the merge with the protocol branch).
    /// </summary>
    private static IKeyExchange? CreateExchange(Lazy<StaticKeyPair> identity)
    {
        _ = identity;
        return null;
    }

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
