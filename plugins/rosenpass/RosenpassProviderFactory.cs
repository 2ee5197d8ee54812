using System.Composition;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Security;

namespace Modular.Plugins.Rosenpass;

/// <summary>The "rosenpass" PSK provider's factory; a placeholder until the post-quantum exchange exists.</summary>
[Export(typeof(IPresharedKeyProviderFactory))]
[PluginName("rosenpass")]
public sealed class RosenpassProviderFactory : IPresharedKeyProviderFactory
{
    public string Description =>
        "Placeholder: no post-quantum key exchange yet; allows every peer without a Rosenpass PSK (the account PSK, if any, still applies).";

    public ValueTask<IPresharedKeyProvider> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        IPresharedKeyProvider provider = new PlaceholderRosenpassProvider();
        return ValueTask.FromResult(provider);
    }
}
