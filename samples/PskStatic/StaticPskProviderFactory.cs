using System.Composition;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;

namespace PskStatic;

/// <summary>
/// A PSK provider plugin: one pre-shared key, read from a file (base64, as <c>wg genpsk</c> writes it), for the
/// peers listed by public key; every other peer is refused. Settings, in <c>[plugins.sample-static-psk]</c>:
/// <c>key_file</c> (required, mode 0600) and <c>peers</c> (a list of base64 public keys).
/// </summary>
[Export(typeof(IPresharedKeyProviderFactory))]
[PluginName("sample-static-psk")]
public sealed class StaticPskProviderFactory : IPresharedKeyProviderFactory
{
    /// <inheritdoc/>
    public string Description => "Sample PSK provider: one pre-shared key from a 0600 file for the listed peers; refuses the others.";

    /// <inheritdoc/>
    public ValueTask<IPresharedKeyProvider> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
    {
        var keyFile = context.Settings.TryGetValue("key_file", out var file) && file is string path
            ? path
            : throw new InvalidOperationException("[plugins.sample-static-psk] needs key_file");
        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(keyFile) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead)) != 0)
        {
            throw new InvalidOperationException($"{keyFile} must not be readable by group or others (chmod 600)");
        }

        var key = WgKey.Parse(File.ReadAllText(keyFile).Trim());
        var peers = context.Settings.TryGetValue("peers", out var list) && list is IReadOnlyList<object?> items
            ? items.OfType<string>().Select(WgKey.Parse).ToHashSet()
            : [];
        // The key itself never reaches the log.
        context.LoggerFactory.CreateLogger<StaticPskProvider>().LogInformation("Static PSK {Key} for {Count} peers", key.ToRedactedString(), peers.Count);
        return ValueTask.FromResult<IPresharedKeyProvider>(new StaticPskProvider(key, peers));
    }
}

/// <summary>Immutable after construction, so it is safe from any thread; the key never changes.</summary>
internal sealed class StaticPskProvider(WgKey key, IReadOnlySet<WgKey> peers) : IPresharedKeyProvider
{
    public event EventHandler<WgKey>? KeyChanged
    {
        add { }
        remove { }
    }

    public ValueTask<PskDecision> GetPresharedKeyAsync(PskPeer peer, CancellationToken cancellationToken)
        => ValueTask.FromResult(peers.Contains(peer.PublicKey)
            ? PskDecision.Allow(key)
            : PskDecision.Refuse($"{peer.Name} is not in the static PSK's peer list"));

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
