using Microsoft.Extensions.Logging;

namespace Modular.Testing;

/// <summary>Hands out one <see cref="ListLogger"/> for every category, for code that takes an <see cref="ILoggerFactory"/>.</summary>
public sealed class ListLoggerFactory(ListLogger logger) : ILoggerFactory
{
    public ListLogger Logger { get; } = logger;

    public ILogger CreateLogger(string categoryName) => Logger;

    public void AddProvider(ILoggerProvider provider) => throw new NotSupportedException();

    public void Dispose()
    {
    }
}
